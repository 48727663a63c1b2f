# The service: HTTPS only, for certificates of OU pipelines from that CA and
# not revoked, from the pipelines' network and loopback, by its name:
RUBBER_TLS_CERT=api.crt RUBBER_TLS_KEY=api.key RUBBER_TLS_CLIENT_CA=clients-ca.crt \
  RUBBER_TLS_CRL=clients.crl RUBBER_ALLOWED_SUBJECTS=OU=pipelines \
  RUBBER_ALLOW_FROM=10.0.0.0/8,127.0.0.1/32 RUBBER_ALLOWED_HOSTS=rubber.example.com \
  RUBBER_LISTEN=0.0.0.0:5443 registry-rubber serve
