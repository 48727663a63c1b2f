# A trial: the self-signed certificate of Deploy behind Apache, step 6.
install -d -m 0750 -g docker-registry /etc/docker/registry/tls
install -m 0644 /etc/registry-rubber/tls/server.crt /etc/docker/registry/tls/server.crt
install -m 0640 -g docker-registry /etc/registry-rubber/tls/server.key /etc/docker/registry/tls/server.key
