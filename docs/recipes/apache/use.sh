# From a pipeline whose address is in $pipelines (or this host), with the
# registry's CA (the trial's server.crt copied over; nothing with a public CA).
# User names are epoch times by convention; the password goes in a POST body,
# never in a URL or a log.
user=$(date +%s%3N)
pass=$(openssl rand -hex 24)
curl -fsS -w '\n' --cacert /etc/registry-rubber/tls/server.crt --data-urlencode "user=$user" \
  --data-urlencode "passwd=$pass" --data-urlencode "ttl=1800" "https://$name:8443/add"
printf '%s' "$pass" | docker login "$name" -u "$user" --password-stdin
docker tag alpine:3 "$name/team/alpine:3"
docker push "$name/team/alpine:3"
curl -fsS -w '\n' --cacert /etc/registry-rubber/tls/server.crt --data-urlencode "user=$user" \
  "https://$name:8443/remove"
