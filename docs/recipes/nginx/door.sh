# The service's auth_request door, on loopback beside nginx:
sed -i 's|^# listen = "127.0.0.1:5081"|listen = "127.0.0.1:5081"|' /etc/registry-rubber/registry-rubber.toml
grep '^listen = "127.0.0.1:5081"' /etc/registry-rubber/registry-rubber.toml
