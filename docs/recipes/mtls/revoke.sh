# Shut a pipeline out before its certificate expires: revoke it, write the
# list again, and have the service read it.
openssl ca -config clients-ca.cnf -revoke ci.crt
openssl ca -config clients-ca.cnf -gencrl -out clients.crl
kill -HUP $(pidof registry-rubber)
