# A MariaDB server on this host: the database, and both accounts for
# 'localhost' (the Unix socket, and TCP when the server resolves names) and
# '127.0.0.1' (TCP under skip-name-resolve). The passwords are generated: the
# service's goes to its password file, Apache's to $apache_pass for its Define.
install -d -m 0755 /etc/registry-rubber
openssl rand -hex 24 |
  install -m 0400 -o registry-rubber -g registry-rubber /dev/stdin /etc/registry-rubber/database-password
pass=$(cat /etc/registry-rubber/database-password)
apache_pass=$(openssl rand -hex 24)
mariadb <<SQL
CREATE DATABASE registry_rubber;
CREATE USER 'registry_rubber'@'localhost' IDENTIFIED BY '$pass',
            'registry_rubber'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON registry_rubber.*
  TO 'registry_rubber'@'localhost', 'registry_rubber'@'127.0.0.1';
CREATE USER 'registry_apache'@'localhost' IDENTIFIED BY '$apache_pass',
            'registry_apache'@'127.0.0.1' IDENTIFIED BY '$apache_pass';
SQL
