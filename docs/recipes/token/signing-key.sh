install -d -m 0750 -g registry-rubber /etc/registry-rubber/token
(
  cd /etc/registry-rubber/token
  openssl ecparam -name prime256v1 -genkey -noout -out signing.key
  openssl req -new -x509 -key signing.key -out signing.crt -days 365 -subj /CN=registry-rubber-token
  chgrp registry-rubber signing.key && chmod 0640 signing.key
)
install -m 0644 /etc/registry-rubber/token/signing.crt /etc/docker/registry/token-signing.crt
