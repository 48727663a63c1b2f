# Without systemd: the database, a check of everything serve will check,
# then the service in the background as its user, with a PID file.
install -d -m 2770 -o registry-rubber -g registry-rubber /var/lib/registry-rubber
runuser -u registry-rubber -- registry-rubber --config /etc/registry-rubber/registry-rubber.toml migrate
runuser -u registry-rubber -- registry-rubber --config /etc/registry-rubber/registry-rubber.toml check-config
start-stop-daemon --start --background --make-pidfile --pidfile /run/registry-rubber.pid \
  --chuid registry-rubber --umask 0007 --output /var/log/registry-rubber.log \
  --exec /usr/local/bin/registry-rubber -- --config /etc/registry-rubber/registry-rubber.toml serve
