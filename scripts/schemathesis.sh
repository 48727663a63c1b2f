#!/usr/bin/env bash
# Checks the admin API against its OpenAPI description (docs/openapi.json)
# with schemathesis: generated requests, valid and invalid, on GET and POST
# (form and JSON), against a running service. Fails on any 5xx, any answer
# the description does not allow, a valid request refused or an invalid one
# accepted.
#
#   scripts/schemathesis.sh [BINARY]     # default target/debug/registry-rubber
#
# Environment: EXAMPLES (50 per operation), SEED (random unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/free-port.sh

bin=$(realpath "${1:-target/debug/registry-rubber}")
[ -x "$bin" ] || { echo "schemathesis.sh: no binary at $bin; build it first" >&2; exit 1; }
version=4.32.5
venv=target/schemathesis-$version
if [ ! -x "$venv/bin/schemathesis" ]; then
  # Debian's own Python, whose venv module comes from python3-venv.
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work=$(mktemp -d)
pid=
finish() {
  [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
  [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap finish EXIT

# sha1: the cheapest hash, so that the run tests the API rather than hashing.
export RUBBER_DATABASE_URL="sqlite://$work/users.sqlite" RUBBER_LOG_LEVEL=warn RUBBER_HASH_TYPE=sha1
"$bin" migrate >/dev/null
port=$(free_port) || port=
[ -n "$port" ] || { echo "schemathesis.sh: no free port" >&2; exit 1; }
RUBBER_LISTEN="127.0.0.1:$port" "$bin" serve >"$work/service.log" 2>&1 &
pid=$!
for i in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  if [ "$i" = 100 ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "schemathesis.sh: the service did not start" >&2
    cat "$work/service.log" >&2
    exit 1
  fi
  sleep 0.1
done
# The description served is the one checked.
curl -fsS "http://127.0.0.1:$port/openapi.json" | cmp - docs/openapi.json

# Strings in ASCII, so that a length in characters is one in bytes, as the
# service counts passwords. Checks that need several users or credentials
# (authorization, resources across calls) do not apply to this API.
status=0
"$venv/bin/schemathesis" run docs/openapi.json --url "http://127.0.0.1:$port" \
  --checks all \
  --exclude-checks ignored_auth,use_after_free,ensure_resource_availability,object_level_authorization \
  --max-examples "${EXAMPLES:-50}" ${SEED:+--seed "$SEED"} \
  --generation-codec ascii --no-color || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "schemathesis.sh: the service died" >&2
  cat "$work/service.log" >&2
  exit 1
fi
exit "$status"
