# Shared by the benchmark scripts: building, starting and stopping the
# service, driving it with wrk, and reading wrk's RESULT lines. Sourced, not
# run. Expects RUNS, DURATION, CONNECTIONS, THREADS and BENCH_DIR set.

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bench: wrk is missing; install it with: apt-get install wrk" >&2
    exit 1
  fi
fi

# BUILD=debug measures the test build instead (sizes, not speed).
if [ "${BUILD:-release}" = debug ]; then
  cargo build --quiet --bin registry-rubber --example sqlite_commit_rate --example sqlite_lookups
  OUT=target/debug
else
  cargo build --release --quiet --bin registry-rubber --example sqlite_commit_rate --example sqlite_lookups
  OUT=target/release
fi
BIN=$OUT/registry-rubber
RAW=$OUT/examples/sqlite_commit_rate
LOOKUPS=$OUT/examples/sqlite_lookups

SERVICE_PID=
stop_service() {
  if [ -n "$SERVICE_PID" ] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    kill -TERM "$SERVICE_PID"
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  SERVICE_PID=
}

# service_address DOOR: the address the service's log says DOOR listens on.
service_address() {
  grep '"message":"listening"' "$BENCH_DIR/service.log" 2>/dev/null |
    grep "\"door\":\"$1\"" | grep -o '"address":"[0-9.:]*"' | head -1 | cut -d'"' -f4 || true
}

# start_service: the service on the configured database (RUBBER_* in the
# environment), its admin API on a free port: ADDR; the auth_request door's
# address, when RUBBER_AUTH_LISTEN is set: AUTH_ADDR.
start_service() {
  rm -f "$BENCH_DIR/service.log"
  RUBBER_LISTEN=127.0.0.1:0 RUBBER_LOG_FORMAT=json "$BIN" serve 2>"$BENCH_DIR/service.log" &
  SERVICE_PID=$!
  local deadline=$((SECONDS + 10))
  ADDR=
  while [ -z "$ADDR" ]; do
    ADDR=$(service_address api)
    [ $SECONDS -lt $deadline ] || { echo "bench: service did not start" >&2; cat "$BENCH_DIR/service.log" >&2; exit 1; }
    [ -n "$ADDR" ] || sleep 0.05
  done
  AUTH_ADDR=$(service_address auth_request)
  until curl -fsS "http://$ADDR/healthz" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "bench: service not healthy" >&2; exit 1; }
    sleep 0.05
  done
}

# run_wrk SCRIPT SECONDS URL [wrk options...]: prints the RESULT line.
run_wrk() {
  local script=$1 seconds=$2 url=$3
  shift 3
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 10s -s "bench/$script" "$@" "$url" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
m() { printf '%s\n' "$@" | median; }
rate() { awk -v r="$(field requests "$1")" -v s="$(field seconds "$1")" 'BEGIN {printf "%.0f", r/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f", a/b; else print "inf"}'; }
