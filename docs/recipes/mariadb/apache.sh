# Apache reads the table with its own account, over TCP to 127.0.0.1. The
# file now holds that account's password: root's only (Apache reads it
# before its processes become registry-apache).
sed -i -e 's|^Define RR_DBD_DRIVER .*|Define RR_DBD_DRIVER mysql|' \
       -e "s|^Define RR_DBD_PARAMS .*|Define RR_DBD_PARAMS \"host=127.0.0.1 port=3306 user=registry_apache pass=$apache_pass dbname=registry_rubber\"|" \
       -e 's|^Define RR_DBD_NOW .*|Define RR_DBD_NOW UNIX_TIMESTAMP()|' \
    /etc/registry-rubber/httpd.conf
chmod 0600 /etc/registry-rubber/httpd.conf
apache2 -f /etc/registry-rubber/httpd.conf -t
