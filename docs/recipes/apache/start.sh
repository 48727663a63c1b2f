# Without systemd: the database first, then the service and the registry,
# each in the background as its own user, with a PID file.
install -d -m 2770 -o registry-rubber -g registry-rubber /var/lib/registry-rubber
runuser -u registry-rubber -- registry-rubber --config /etc/registry-rubber/registry-rubber.toml migrate
start-stop-daemon --start --background --make-pidfile --pidfile /run/registry-rubber.pid \
  --chuid registry-rubber --umask 0007 --output /var/log/registry-rubber.log \
  --exec /usr/local/bin/registry-rubber -- --config /etc/registry-rubber/registry-rubber.toml serve
start-stop-daemon --start --background --make-pidfile --pidfile /run/docker-registry.pid \
  --chuid docker-registry --output /var/log/docker-registry.log \
  --exec /usr/bin/docker-registry -- serve /etc/docker/registry/config.yml
