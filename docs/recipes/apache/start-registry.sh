start-stop-daemon --start --background --make-pidfile --pidfile /run/docker-registry.pid \
  --chuid docker-registry --output /var/log/docker-registry.log \
  --exec /usr/bin/docker-registry -- serve /etc/docker/registry/config.yml
