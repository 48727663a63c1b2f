nginx -c /etc/registry-rubber/nginx.conf -s quit
