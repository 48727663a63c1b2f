# 401 from the door without a user, and from the registry without a token:
curl -sS --retry 30 --retry-connrefused --retry-delay 1 -o /dev/null -w '%{http_code}\n' \
  --cacert /etc/registry-rubber/tls/server.crt "https://$name:5082/token?service=registry"
curl -sS --retry 30 --retry-connrefused --retry-delay 1 -o /dev/null -w '%{http_code} %header{www-authenticate}\n' \
  --cacert /etc/registry-rubber/tls/server.crt "https://$name/v2/"
