# A trial: a self-signed certificate for the name (clients read its
# subjectAltName, not its CN), trusted by this host's Docker for this
# registry only, and the name pointing at this host.
install -d -m 0750 /etc/registry-rubber/tls
openssl req -x509 -newkey rsa:3072 -nodes -days 365 \
  -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
  -keyout /etc/registry-rubber/tls/server.key -out /etc/registry-rubber/tls/server.crt
install -D -m 0644 /etc/registry-rubber/tls/server.crt "/etc/docker/certs.d/$name/ca.crt"
echo "127.0.0.1 $name" >>/etc/hosts
