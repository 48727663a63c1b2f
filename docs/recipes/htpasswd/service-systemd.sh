# The unit's ProtectSystem=strict lets the service write its state directory
# only: a drop-in adds the file's.
install -D -m 0644 /dev/stdin /etc/systemd/system/registry-rubber.service.d/htpasswd.conf <<'INI'
[Service]
ReadWritePaths=/var/lib/registry-rubber-htpasswd
INI
systemctl daemon-reload
systemctl restart registry-rubber
