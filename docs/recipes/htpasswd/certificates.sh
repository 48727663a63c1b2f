install -d -m 0750 -g docker-registry /etc/docker/registry/tls
install -m 0644 fullchain.pem /etc/docker/registry/tls/server.crt
install -m 0640 -g docker-registry privkey.pem /etc/docker/registry/tls/server.key
