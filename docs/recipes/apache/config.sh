# The sample configuration, with two changes: the service believes the
# X-Forwarded-For of Apache (on loopback), and so allows the pipelines'
# addresses it then sees, besides loopback's.
allow=$(printf ', "%s"' $pipelines)
install -d -m 0755 /etc/registry-rubber
sed -e "0,/^allow_from = .*/s||allow_from = [\"127.0.0.0/8\", \"::1/128\"$allow]|" \
    -e '0,/^trusted_proxies = .*/s||trusted_proxies = ["127.0.0.1/32"]|' \
    deploy/registry-rubber.toml.sample |
  install -m 0640 -g registry-rubber /dev/stdin /etc/registry-rubber/registry-rubber.toml
