# Each part answers (the first two from this host only); --cacert only while
# the certificate is the trial's self-signed one.
curl -fsS --retry 30 --retry-connrefused --retry-delay 1 -w '\n' http://127.0.0.1:5080/healthz
curl -fsS --retry 30 --retry-connrefused --retry-delay 1 -w '\n' http://127.0.0.1:5000/v2/  # {}
curl -sS -o /dev/null -w '%{http_code}\n' --cacert /etc/registry-rubber/tls/server.crt \
  "https://$name/v2/"  # 401: the registry needs a user
