# The registry's user binds port 443 with a capability, and starts after the
# service:
install -D -m 0644 /dev/stdin /etc/systemd/system/docker-registry.service.d/registry-rubber.conf <<'INI'
[Unit]
Wants=registry-rubber.service
After=registry-rubber.service

[Service]
AmbientCapabilities=CAP_NET_BIND_SERVICE
INI
systemctl daemon-reload
systemctl restart docker-registry
