# A CA for the pipelines (kept offline), with what `openssl ca` needs to keep
# its revocation list (CRL v2, numbered), and the list, empty for now:
openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=pipelines CA" \
  -keyout clients-ca.key -out clients-ca.crt
touch clients-ca.index
echo 01 >clients-ca.crlnumber
printf '%s\n' '[ca]' 'default_ca = pipelines' '[pipelines]' 'database = clients-ca.index' \
  'crlnumber = clients-ca.crlnumber' 'certificate = clients-ca.crt' \
  'private_key = clients-ca.key' 'default_md = sha256' 'default_crl_days = 30' \
  'crl_extensions = crl_ext' '[crl_ext]' 'authorityKeyIdentifier = keyid:always' >clients-ca.cnf
openssl ca -config clients-ca.cnf -gencrl -out clients.crl
# A pipeline's key and certificate, X.509 v3 for client authentication, with
# an OU and a CN that allowed_subjects can match:
openssl req -x509 -newkey rsa:3072 -nodes -days 90 -subj "/OU=pipelines/CN=ci-runner-7" \
  -CA clients-ca.crt -CAkey clients-ca.key \
  -addext basicConstraints=CA:FALSE -addext extendedKeyUsage=clientAuth \
  -keyout ci.key -out ci.crt
# The API's certificate for its name, from a CA of its own (any CA will do):
openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=registry-rubber API CA" \
  -keyout api-ca.key -out api-ca.crt
openssl req -x509 -newkey rsa:3072 -nodes -days 365 -subj "/CN=rubber.example.com" \
  -CA api-ca.crt -CAkey api-ca.key \
  -addext basicConstraints=CA:FALSE -addext extendedKeyUsage=serverAuth \
  -addext subjectAltName=DNS:rubber.example.com -keyout api.key -out api.crt
