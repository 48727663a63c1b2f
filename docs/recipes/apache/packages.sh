apt-get update
apt-get install -y apache2 libaprutil1-dbd-sqlite3 docker-registry curl openssl
