start-stop-daemon --stop --pidfile /run/docker-registry.pid --remove-pidfile --retry TERM/30/KILL/5
start-stop-daemon --stop --pidfile /run/registry-rubber.pid --remove-pidfile --retry TERM/40/KILL/5
