# A trial on the service's own host only: the name to loopback.
echo "127.0.0.1 rubber.example.com" >>/etc/hosts
# The pipeline, trusting the API's CA and showing its certificate:
curl -fsS -w '\n' --cacert api-ca.crt --cert ci.crt --key ci.key -d ttl=900 https://rubber.example.com:5443/add
