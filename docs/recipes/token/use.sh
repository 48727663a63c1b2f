# A credential that may push and pull team/app, and nothing else:
user=$(date +%s%3N)
pass=$(openssl rand -hex 24)
curl -fsS -w '\n' --data-urlencode "user=$user" --data-urlencode "passwd=$pass" \
  --data-urlencode "ttl=1800" --data-urlencode "scope=repository:team/app:pull,push" \
  http://127.0.0.1:5080/add
printf '%s' "$pass" | docker login "$name" -u "$user" --password-stdin
docker tag alpine:3 "$name/team/app:1.0"
docker push "$name/team/app:1.0"
docker tag alpine:3 "$name/other/app:1.0"
docker push "$name/other/app:1.0" || echo "refused: no grant on other/app"
curl -fsS -w '\n' --data-urlencode "user=$user" http://127.0.0.1:5080/remove
