#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, the API suite, and the
# end-to-end tests against real Apache httpd, docker-registry and skopeo.
# On a fresh Debian 12 machine, as root, it first installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(apache2 apache2-utils libaprutil1-dbd-sqlite3 docker-registry skopeo openssl curl sqlite3 wrk)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: missing Debian packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
