# Debian's nginx.service, pointed at the file (the directories are the ones
# render.sh names):
install -D -m 0644 /dev/stdin /etc/systemd/system/nginx.service.d/registry-rubber.conf <<'INI'
[Unit]
Wants=registry-rubber.service
After=registry-rubber.service

[Service]
RuntimeDirectory=registry-rubber-nginx
LogsDirectory=registry-rubber-nginx
StateDirectory=registry-rubber-nginx
PIDFile=/run/registry-rubber-nginx/nginx.pid
ExecStartPre=
ExecStartPre=/usr/sbin/nginx -t -q -c /etc/registry-rubber/nginx.conf
ExecStart=
ExecStart=/usr/sbin/nginx -c /etc/registry-rubber/nginx.conf
ExecReload=
ExecReload=/usr/sbin/nginx -c /etc/registry-rubber/nginx.conf -s reload
ExecStop=
ExecStop=-/sbin/start-stop-daemon --quiet --stop --retry QUIT/5 --pidfile /run/registry-rubber-nginx/nginx.pid
INI
systemctl daemon-reload
systemctl restart nginx
