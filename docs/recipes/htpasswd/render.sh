# The sample over Debian's configuration, its placeholders replaced; readable
# by the registry's group only, since it holds http.secret.
export RR_STORAGE_DIR=/var/lib/docker-registry RR_REGISTRY_ADDR=:443 \
  RR_HTTP_SECRET=$(openssl rand -hex 32) RR_TLS_CERT=/etc/docker/registry/tls/server.crt \
  RR_TLS_KEY=/etc/docker/registry/tls/server.key RR_REALM=registry \
  RR_HTPASSWD_FILE=/var/lib/registry-rubber-htpasswd/htpasswd
vars='RR_STORAGE_DIR RR_REGISTRY_ADDR RR_HTTP_SECRET RR_TLS_CERT
    RR_TLS_KEY RR_REALM RR_HTPASSWD_FILE'
for v in $vars; do printenv "$v" >/dev/null || echo "not set: $v"; done
envsubst "$(printf '${%s} ' $vars)" \
    < deploy/registry-htpasswd.yml.sample > /etc/docker/registry/config.yml
chgrp docker-registry /etc/docker/registry/config.yml
chmod 0640 /etc/docker/registry/config.yml
