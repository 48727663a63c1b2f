# The service's configuration names the database and the password file; then
# its account creates the table, which Apache's account may then read.
sed -i -e 's|^database_url = .*|database_url = "mysql://registry_rubber@127.0.0.1:3306/registry_rubber"|' \
       -e 's|^# database_password_file = |database_password_file = |' \
    /etc/registry-rubber/registry-rubber.toml
runuser -u registry-rubber -- registry-rubber --config /etc/registry-rubber/registry-rubber.toml migrate
mariadb -e "GRANT SELECT ON registry_rubber.users TO 'registry_apache'@'localhost', 'registry_apache'@'127.0.0.1'"
