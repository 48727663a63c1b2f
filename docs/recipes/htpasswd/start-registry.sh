# Without systemd: the registry as its user, with the capability to bind 443.
start-stop-daemon --start --background --make-pidfile --pidfile /run/docker-registry.pid \
  --output /var/log/docker-registry.log --exec /usr/bin/setpriv -- \
  --reuid=docker-registry --regid=docker-registry --init-groups \
  --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
  /usr/bin/docker-registry serve /etc/docker/registry/config.yml
