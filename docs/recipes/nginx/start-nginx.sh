nginx -c /etc/registry-rubber/nginx.conf
