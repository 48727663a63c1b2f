apache2 -f /etc/registry-rubber/httpd.conf -k graceful-stop
