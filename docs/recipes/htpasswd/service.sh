# The service hashes with bcrypt, the only hash the registry reads, and keeps
# the file. Its directory is written by the service only and read by the
# registry's group; setgid, so that every file renamed into it keeps that
# group. The file starts empty, so that the registry finds one even first.
sed -i -e 's|^hash_type = .*|hash_type = "bcrypt"|' -e 's|^bcrypt_cost = .*|bcrypt_cost = 4|' \
       -e 's|^# path = "/var/lib/registry-rubber-htpasswd/htpasswd"|path = "/var/lib/registry-rubber-htpasswd/htpasswd"|' \
    /etc/registry-rubber/registry-rubber.toml
install -d -m 2750 -o registry-rubber -g docker-registry /var/lib/registry-rubber-htpasswd
install -m 0640 -o registry-rubber -g docker-registry /dev/null /var/lib/registry-rubber-htpasswd/htpasswd
grep -E '^(hash_type|bcrypt_cost|path) = ' /etc/registry-rubber/registry-rubber.toml
