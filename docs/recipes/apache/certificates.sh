install -d -m 0750 /etc/registry-rubber/tls
install -m 0644 fullchain.pem /etc/registry-rubber/tls/server.crt
install -m 0600 privkey.pem   /etc/registry-rubber/tls/server.key
