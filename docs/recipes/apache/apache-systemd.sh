install -D -m 0644 /dev/stdin /etc/systemd/system/apache2.service.d/registry-rubber.conf <<'INI'
[Unit]
Wants=registry-rubber.service
After=registry-rubber.service

[Service]
RuntimeDirectory=registry-rubber-httpd
LogsDirectory=registry-rubber-httpd
PIDFile=/run/registry-rubber-httpd/httpd.pid
ExecStart=
ExecStart=/usr/sbin/apache2 -f /etc/registry-rubber/httpd.conf -k start
ExecStop=
ExecStop=/usr/sbin/apache2 -f /etc/registry-rubber/httpd.conf -k graceful-stop
ExecReload=
ExecReload=/usr/sbin/apache2 -f /etc/registry-rubber/httpd.conf -k graceful
INI
systemctl daemon-reload
systemctl restart apache2
