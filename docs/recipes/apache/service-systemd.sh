install -m 0644 deploy/registry-rubber.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now registry-rubber
