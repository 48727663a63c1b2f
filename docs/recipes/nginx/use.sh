# The sample proxies the registry only: mint on this host, on the API's
# loopback address (or give the API its own TLS and allow_from for pipelines
# elsewhere), then log in and push through nginx.
user=$(date +%s%3N)
pass=$(openssl rand -hex 24)
curl -fsS -w '\n' --data-urlencode "user=$user" --data-urlencode "passwd=$pass" \
  --data-urlencode "ttl=1800" http://127.0.0.1:5080/add
printf '%s' "$pass" | docker login "$name" -u "$user" --password-stdin
docker tag alpine:3 "$name/team/alpine:3"
docker push "$name/team/alpine:3"
curl -fsS -w '\n' --data-urlencode "user=$user" http://127.0.0.1:5080/remove
