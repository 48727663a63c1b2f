# The door on every address, over TLS with the registry's certificate (a
# copy the service may read), letting in the clients of $pipelines:
install -m 0644 /etc/registry-rubber/tls/server.crt /etc/registry-rubber/token/tls.crt
install -m 0640 -g registry-rubber /etc/registry-rubber/tls/server.key /etc/registry-rubber/token/tls.key
allow=$(printf ', "%s"' $pipelines)
sed -i -e '/^\[token\]/,$ {
  s|^# listen = .*|listen = "0.0.0.0:5082"|
  s|^# key = |key = |
  s|^# cert = |cert = |
  s|^# tls_cert = .*|tls_cert = "/etc/registry-rubber/token/tls.crt"|
  s|^# tls_key = .*|tls_key = "/etc/registry-rubber/token/tls.key"|
  s|^allow_from = .*|allow_from = ["127.0.0.0/8", "::1/128"'"$allow"']|
}' /etc/registry-rubber/registry-rubber.toml
sed -n '/^\[token\]/,$p' /etc/registry-rubber/registry-rubber.toml |
  grep -E '^(listen|key|cert|tls_cert|tls_key|allow_from) = '
