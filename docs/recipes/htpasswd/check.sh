curl -fsS --retry 30 --retry-connrefused --retry-delay 1 -w '\n' http://127.0.0.1:5080/healthz
stat -c '%A %U %G' /var/lib/registry-rubber-htpasswd/htpasswd   # -rw-r----- registry-rubber docker-registry
curl -sS --retry 30 --retry-connrefused --retry-delay 1 -o /dev/null -w '%{http_code}\n' \
  --cacert /etc/registry-rubber/tls/server.crt "https://$name/v2/"  # 401: the registry needs a user
