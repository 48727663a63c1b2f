#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, a short run of each fuzz
# target (scripts/fuzz.sh), a one-minute WAL soak, the API suite on SQLite
# and again on a throwaway MariaDB, the MySQL backend's own tests (each with
# MariaDB servers of its own), and the end-to-end tests against real Apache
# httpd and nginx, docker-registry and skopeo; among them the Debian package
# (built from the release binary) installed with dpkg, and the container
# image pushed and pulled.
# On a fresh Debian 12 machine, as root, it first installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/free-port.sh
# Each step is announced with the time spent so far.
step() { printf '== %s (%dm%02ds)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

packages=(apache2 apache2-utils libaprutil1-dbd-sqlite3 libaprutil1-dbd-mysql nginx gettext-base mariadb-server docker-registry skopeo openssl curl sqlite3 wrk adduser iproute2 python3-venv g++ groff-base dpkg-dev umoci)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: missing Debian packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  step "installing ${missing[*]}"
  apt-get update -qq
  # Services from these packages must not start on their own: the tests start
  # private instances.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
# The release binary, built once: the Debian package and the container
# image are made from it, and the end-to-end tests install that package
# (tests/e2e/package.rs) and push, pull and run that image (tests/e2e/image.rs).
step "cargo build --release"
cargo build --release --locked
step "Debian package"
scripts/deb.sh
step "container image"
scripts/image.sh
step "cargo test"
cargo test --all-targets
step "fuzz targets"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
scripts/fuzz.sh

step "schemathesis: the admin API against docs/openapi.json"
scripts/schemathesis.sh target/debug/registry-rubber

# One minute of adds flat out on the test build: fails when the SQLite WAL
# passes wal_limit or is not emptied once the adds stop. Latency is printed
# only: this machine runs other work too.
step "WAL soak (bench/soak.sh, one minute)"
BUILD=debug DURATION=60 INTERVAL=20 P99_LIMIT=off bench/soak.sh

# A throwaway MariaDB for the second run of the API suite: its own data
# directory in a temporary directory, root without a password on 127.0.0.1,
# a free high port. Stopped by its PID when this script exits, however it
# exits.
export PATH="$PATH:/usr/sbin:/sbin"
mdb=$(mktemp -d)
mdb_pid=
stop_mariadb() {
  if [ -n "$mdb_pid" ]; then
    kill -TERM "$mdb_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 "$mdb_pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -rf "$mdb"
}
trap stop_mariadb EXIT
port=$(free_port) || port=
[ -n "$port" ] || { echo "test.sh: no free port for MariaDB" >&2; exit 1; }
step "MariaDB on 127.0.0.1:$port"
mariadb-install-db --no-defaults --datadir="$mdb/data" --user=root \
  --auth-root-authentication-method=normal --skip-test-db >"$mdb/install.log" 2>&1 ||
  { cat "$mdb/install.log" >&2; exit 1; }
mariadbd --no-defaults --datadir="$mdb/data" --socket="$mdb/sock" --port="$port" \
  --bind-address=127.0.0.1 --user=root --pid-file="$mdb/pid" --log-error="$mdb/err.log" \
  --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=32M &
mdb_pid=$!
for i in $(seq 1 600); do
  mariadb-admin --no-defaults --socket="$mdb/sock" -uroot ping >/dev/null 2>&1 && break
  if [ "$i" = 600 ] || ! kill -0 "$mdb_pid" 2>/dev/null; then
    echo "test.sh: MariaDB did not start" >&2
    cat "$mdb/err.log" >&2
    exit 1
  fi
  sleep 0.05
done

step "cargo test --test api (MariaDB)"
REGISTRY_RUBBER_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port" cargo test --test api
step "every test passed"
