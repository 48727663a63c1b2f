# The service's user and group, and a user of Apache's own (never www-data)
# in that group; each made only if missing.
getent group registry-rubber >/dev/null || addgroup --system registry-rubber
id -u registry-rubber >/dev/null 2>&1 || adduser --system --ingroup registry-rubber \
  --no-create-home --home /var/lib/registry-rubber registry-rubber
id -u registry-apache >/dev/null 2>&1 || adduser --system --group \
  --no-create-home --home /nonexistent registry-apache
adduser registry-apache registry-rubber
