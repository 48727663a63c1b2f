# The sample, with its Defines set from the settings; every other Define keeps
# the value the steps above chose (ports 443, 80 and 8443, the registry on
# 127.0.0.1:5000, the service on 127.0.0.1:5080, the database and the files).
install -m 0644 deploy/httpd.conf.sample /etc/registry-rubber/httpd.conf
sed -i -e "s|^Define RR_SERVER_NAME .*|Define RR_SERVER_NAME $name|" \
       -e "s|^Define RR_PUBLIC_URL .*|Define RR_PUBLIC_URL https://$name|" \
       -e "s|^Define RR_LISTEN_ADDR .*|Define RR_LISTEN_ADDR $listen_addr|" \
       -e "s|^Define RR_API_ALLOW .*|Define RR_API_ALLOW \"127.0.0.1 ::1 $pipelines\"|" \
    /etc/registry-rubber/httpd.conf
install -d /run/registry-rubber-httpd /var/log/registry-rubber-httpd
apache2 -f /etc/registry-rubber/httpd.conf -t
