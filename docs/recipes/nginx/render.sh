# The sample with its placeholders replaced, and nothing else (envsubst is
# told which variables to replace, so nginx's own $host and $request_uri stay).
export RR_NGINX_USER=www-data RR_RUN_DIR=/run/registry-rubber-nginx \
  RR_LOG_DIR=/var/log/registry-rubber-nginx RR_TEMP_DIR=/var/lib/registry-rubber-nginx \
  RR_SERVER_NAME=$name RR_LISTEN_ADDR=$listen_addr RR_HTTP_PORT=80 RR_HTTPS_PORT=443 \
  RR_PUBLIC_URL=https://$name RR_TLS_CERT=/etc/registry-rubber/tls/server.crt \
  RR_TLS_KEY=/etc/registry-rubber/tls/server.key \
  RR_REGISTRY_BACKEND=127.0.0.1:5000 RR_AUTH_BACKEND=127.0.0.1:5081
vars='RR_NGINX_USER RR_RUN_DIR RR_LOG_DIR RR_TEMP_DIR RR_SERVER_NAME
    RR_LISTEN_ADDR RR_HTTP_PORT RR_HTTPS_PORT RR_PUBLIC_URL RR_TLS_CERT
    RR_TLS_KEY RR_REGISTRY_BACKEND RR_AUTH_BACKEND'
for v in $vars; do printenv "$v" >/dev/null || echo "not set: $v"; done
envsubst "$(printf '${%s} ' $vars)" \
    < deploy/nginx.conf.sample > /etc/registry-rubber/nginx.conf
install -d /run/registry-rubber-nginx /var/log/registry-rubber-nginx /var/lib/registry-rubber-nginx
nginx -t -c /etc/registry-rubber/nginx.conf
