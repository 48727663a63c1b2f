install -d /run/registry-rubber-httpd /var/log/registry-rubber-httpd
apache2 -f /etc/registry-rubber/httpd.conf -k start
