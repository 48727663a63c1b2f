# The sample over Debian's configuration, its placeholders replaced: the realm
# is the door as the clients reach it, the service and the issuer the door's,
# the bundle the signing certificate.
export RR_STORAGE_DIR=/var/lib/docker-registry RR_REGISTRY_ADDR=:443 \
  RR_HTTP_SECRET=$(openssl rand -hex 32) RR_TLS_CERT=/etc/docker/registry/tls/server.crt \
  RR_TLS_KEY=/etc/docker/registry/tls/server.key RR_TOKEN_REALM=https://$name:5082/token \
  RR_TOKEN_SERVICE=registry RR_TOKEN_ISSUER=registry-rubber \
  RR_TOKEN_ROOTCERTBUNDLE=/etc/docker/registry/token-signing.crt
vars='RR_STORAGE_DIR RR_REGISTRY_ADDR RR_HTTP_SECRET RR_TLS_CERT
    RR_TLS_KEY RR_TOKEN_REALM RR_TOKEN_SERVICE RR_TOKEN_ISSUER
    RR_TOKEN_ROOTCERTBUNDLE'
for v in $vars; do printenv "$v" >/dev/null || echo "not set: $v"; done
envsubst "$(printf '${%s} ' $vars)" \
    < deploy/registry-token.yml.sample > /etc/docker/registry/config.yml
chgrp docker-registry /etc/docker/registry/config.yml
chmod 0640 /etc/docker/registry/config.yml
