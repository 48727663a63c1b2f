#!/usr/bin/env bash
# Benchmark of the doors that check credentials: the nginx auth_request door
# against Apache's mod_authn_dbd, checking the same credential in the same
# users table, in the same run; and the token door's tokens per second.
#
#   bench/doors.sh                    # median of 3 runs of 5 s per figure
#   RUNS=5 DURATION=10 bench/doors.sh
#
# For each hash type it mints one credential with the CLI, then drives with
# wrk (2 threads, 32 connections, keep-alive) both GET /auth on the door
# (after the first check, answered from the verifier's cache: the row is
# still read every time) and a tiny static file behind Apache's Basic
# authentication with AuthDBDUserPWQuery (Apache has no safe cache: it hashes
# on every request). It also measures the cheapest answer the service gives
# (a 404 from the door: no database, no hashing), a refused check, and the
# token door signing an ES256 token for a cached bcrypt credential.
#
# Environment: RUNS (3), DURATION (5), CONNECTIONS (32), THREADS (2),
# HASH_TYPES ("sha1 md5 sha256 sha512 bcrypt"), BENCH_DIR (target/bench),
# LOG_LEVEL of the service (warn, and the start-up lines that give the
# addresses: Apache logs no access lines either).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
HASH_TYPES=${HASH_TYPES:-sha1 md5 sha256 sha512 bcrypt}
LOG_LEVEL=${LOG_LEVEL:-warn,registry_rubber::startup=info}
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}/doors" && cd "${BENCH_DIR:-target/bench}/doors" && pwd)
APACHE_PID=

source bench/lib.sh

for program in apache2 sqlite3; do
  command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] ||
    { echo "bench: $program is missing (apt-get install apache2 libaprutil1-dbd-sqlite3 sqlite3)" >&2; exit 1; }
done
APACHE=$(command -v apache2 || echo /usr/sbin/apache2)

stop_apache() {
  if [ -n "$APACHE_PID" ] && kill -0 "$APACHE_PID" 2>/dev/null; then
    kill -TERM "$APACHE_PID"
    while kill -0 "$APACHE_PID" 2>/dev/null; do sleep 0.05; done
  fi
  APACHE_PID=
}
cleanup() { stop_service; stop_apache; }
trap cleanup EXIT

source scripts/free-port.sh

# The users table, readable and writable by Apache's group as the WAL needs.
rm -rf "$BENCH_DIR/state" "$BENCH_DIR/httpd"
mkdir -p "$BENCH_DIR/state" "$BENCH_DIR/httpd/htdocs"
chgrp www-data "$BENCH_DIR/state" 2>/dev/null || true
chmod 2770 "$BENCH_DIR/state"
chmod 711 "$BENCH_DIR" "$BENCH_DIR/httpd"
DB="$BENCH_DIR/state/users.sqlite"
export RUBBER_DATABASE_URL="sqlite://$DB" RUBBER_BCRYPT_COST=10 RUBBER_LOG_LEVEL=$LOG_LEVEL
"$BIN" migrate >/dev/null
chgrp www-data "$DB" 2>/dev/null || true

PASSWORD=Bench-Door-Passw0rd
for h in $HASH_TYPES; do
  printf '%s' "$PASSWORD" | "$BIN" --hash-type "$h" add --ttl 43200 "bench-$h" >/dev/null
done

APACHE_PORT=$(free_port)
printf 'ok\n' >"$BENCH_DIR/httpd/htdocs/ok"
chmod 755 "$BENCH_DIR/httpd/htdocs"; chmod 644 "$BENCH_DIR/httpd/htdocs/ok"
cat >"$BENCH_DIR/httpd/httpd.conf" <<CONF
ServerRoot "$BENCH_DIR/httpd"
PidFile "$BENCH_DIR/httpd/httpd.pid"
DefaultRuntimeDir "$BENCH_DIR/httpd"
ErrorLog "$BENCH_DIR/httpd/error.log"
LogLevel warn
Listen 127.0.0.1:$APACHE_PORT
ServerName 127.0.0.1
User www-data
Group www-data
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so
LoadModule dbd_module /usr/lib/apache2/modules/mod_dbd.so
LoadModule authn_dbd_module /usr/lib/apache2/modules/mod_authn_dbd.so
DocumentRoot "$BENCH_DIR/httpd/htdocs"
KeepAlive On
MaxKeepAliveRequests 0
DBDriver sqlite3
DBDParams "$DB"
<Location "/">
    AuthType Basic
    AuthName "registry"
    AuthBasicProvider dbd
    AuthDBDUserPWQuery "SELECT password FROM users WHERE username = %s AND (expires_at IS NULL OR expires_at > unixepoch())"
    Require valid-user
</Location>
CONF
"$APACHE" -f "$BENCH_DIR/httpd/httpd.conf" -k start
deadline=$((SECONDS + 15))
until [ -s "$BENCH_DIR/httpd/httpd.pid" ] && curl -s -o /dev/null "http://127.0.0.1:$APACHE_PORT/ok"; do
  [ $SECONDS -lt $deadline ] || { echo "bench: Apache did not start" >&2; cat "$BENCH_DIR/httpd/error.log" >&2; exit 1; }
  sleep 0.05
done
APACHE_PID=$(cat "$BENCH_DIR/httpd/httpd.pid")

# The token door's signing key and certificate, made as the README says.
openssl ecparam -name prime256v1 -genkey -noout -out "$BENCH_DIR/signing.key" 2>/dev/null
openssl req -new -x509 -key "$BENCH_DIR/signing.key" -out "$BENCH_DIR/signing.crt" -days 1 \
  -subj /CN=registry-rubber-token 2>/dev/null
RUBBER_AUTH_LISTEN=127.0.0.1:0 RUBBER_TOKEN_LISTEN=127.0.0.1:0 \
  RUBBER_TOKEN_KEY="$BENCH_DIR/signing.key" RUBBER_TOKEN_CERT="$BENCH_DIR/signing.crt" start_service
[ -n "$AUTH_ADDR" ] || { echo "bench: the auth_request door did not open" >&2; exit 1; }
TOKEN_ADDR=$(service_address token)
[ -n "$TOKEN_ADDR" ] || { echo "bench: the token door did not open" >&2; exit 1; }

basic() { printf 'Basic %s' "$(printf '%s:%s' "$1" "$2" | base64 -w0)"; }
# Both doors must agree before anything is timed.
for h in $HASH_TYPES; do
  for url in "http://$AUTH_ADDR/auth" "http://127.0.0.1:$APACHE_PORT/ok"; do
    ok=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $(basic "bench-$h" "$PASSWORD")" "$url")
    bad=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $(basic "bench-$h" wrong)" "$url")
    [ "$ok/$bad" = "200/401" ] || { echo "bench: $url answered $ok/$bad for bench-$h" >&2; exit 1; }
  done
done

echo "== auth_request door against Apache mod_authn_dbd: $RUNS runs x ${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads, service log level $LOG_LEVEL"
echo "   machine: $(nproc) cores; the same SQLite users table for both"

md_start "The checking doors against Apache mod_authn_dbd"
md "Service log level: $LOG_LEVEL; $RUNS runs of ${DURATION}s per row; the same SQLite users table for the door and Apache." ""
md_runs_header

# bench_one SCENARIO NAME URL AUTHORIZATION: median checks/s, p50, p99 and
# the worst max of RUNS runs; every run's p99 and max.
bench_one() {
  local scenario=$1 name=$2 url=$3 authorization=$4 rates=() p50=() p99=() max=() errors=0 non2xx=0 r run
  for run in $(seq "$RUNS"); do
    r=$(SCENARIO=$scenario run_wrk check.lua "$DURATION" "$url" -H "Authorization: $authorization")
    md_run "$name" "$run" "$r"
    rates+=("$(rate "$r")"); p50+=("$(field p50_ms "$r")"); p99+=("$(field p99_ms "$r")"); max+=("$(field max_ms "$r")")
    errors=$((errors + $(field errors "$r"))); non2xx=$((non2xx + $(field non2xx "$r")))
  done
  RESULT_RATE=$(m "${rates[@]}")
  RESULT_P99=$(m "${p99[@]}")
  printf '%-34s %9s/s   p50 %8s ms   p99 %8s ms   max %8s ms   (runs: %s; p99 %s; max %s; transport errors %s, non-2xx %s)\n' \
    "$name" "$RESULT_RATE" "$(m "${p50[@]}")" "$RESULT_P99" "$(worst "${max[@]}")" \
    "$(IFS=/; echo "${rates[*]}")" "$(IFS=/; echo "${p99[*]}")" "$(IFS=/; echo "${max[*]}")" "$errors" "$non2xx"
}

bench_one door-404 "door 404 (cheapest answer)" "http://$AUTH_ADDR/nothing" "$(basic x y)"
CHEAPEST=$RESULT_RATE
FIRST_TYPE=${HASH_TYPES%% *}
bench_one door-refused "door refused ($FIRST_TYPE user)" "http://$AUTH_ADDR/auth" "$(basic "bench-$FIRST_TYPE" wrong)"
declare -A DOOR APACHE_RATE DOOR_P99 APACHE_P99
for h in $HASH_TYPES; do
  bench_one "door-$h" "door $h (cached)" "http://$AUTH_ADDR/auth" "$(basic "bench-$h" "$PASSWORD")"
  DOOR[$h]=$RESULT_RATE; DOOR_P99[$h]=$RESULT_P99
  bench_one "apache-$h" "Apache $h" "http://127.0.0.1:$APACHE_PORT/ok" "$(basic "bench-$h" "$PASSWORD")"
  APACHE_RATE[$h]=$RESULT_RATE; APACHE_P99[$h]=$RESULT_P99
done

TOKEN_URL="http://$TOKEN_ADDR/token?service=registry&scope=repository:team/app:pull,push"
if [[ " $HASH_TYPES " == *" bcrypt "* ]]; then
  curl -fsS -o /dev/null -H "Authorization: $(basic bench-bcrypt "$PASSWORD")" "$TOKEN_URL" ||
    { echo "bench: the token door refused the bench credential" >&2; exit 1; }
  bench_one token-door "token door, bcrypt (cached)" "$TOKEN_URL" "$(basic bench-bcrypt "$PASSWORD")"
  TOKENS=$RESULT_RATE
fi

echo
echo "== ratios (medians, same run)"
md "" "| checks/s (medians) | door | p99 ms | Apache | p99 ms | door / Apache | door / cheapest answer |" "|---|---|---|---|---|---|---|"
for h in $HASH_TYPES; do
  md "| $h | ${DOOR[$h]} | ${DOOR_P99[$h]} | ${APACHE_RATE[$h]} | ${APACHE_P99[$h]} | $(ratio "${DOOR[$h]}" "${APACHE_RATE[$h]}")x | $(ratio "${DOOR[$h]}" "$CHEAPEST") |"
  printf '%-8s door %9s/s   Apache %9s/s   door/Apache %8sx   door/cheapest answer %5s\n' \
    "$h" "${DOOR[$h]}" "${APACHE_RATE[$h]}" "$(ratio "${DOOR[$h]}" "${APACHE_RATE[$h]}")" "$(ratio "${DOOR[$h]}" "$CHEAPEST")"
done
[ -z "${TOKENS:-}" ] || printf '%-8s token door %9s tokens/s   door/cheapest answer %5s\n' bcrypt "$TOKENS" "$(ratio "$TOKENS" "$CHEAPEST")"
[ -z "${TOKENS:-}" ] || md "" "Token door, bcrypt (cached): $TOKENS tokens/s, $(ratio "$TOKENS" "$CHEAPEST") of the cheapest answer's rate ($CHEAPEST/s)."
plot_latencies
echo "   results: $RESULTS"
curl -s "http://$ADDR/metrics" | grep -E '^rubber_(verifications_total|door_checks_total|tokens_issued_total)' | sed 's/^/   /'
