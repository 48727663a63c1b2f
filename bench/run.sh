#!/usr/bin/env bash
# Benchmark: durable adds/s, error answers/s and p50/p99 latency at 32
# connections, and in the same run the raw durable single-row commit rate of
# SQLite on the same disk, so that every figure is also a ratio.
#
#   bench/run.sh                 # median of 3 runs of 5 s each
#   RUNS=5 DURATION=10 bench/run.sh
#
# A second part measures the longest add latency while the background sweeper
# deletes SWEEP_ROWS (100000) expired users, against the same figure with
# nothing to sweep.
#
# Environment: RUNS (3), DURATION seconds per run (5), CONNECTIONS (32),
# THREADS (2, wrk's), HASH_TYPES (hash types measured for the per-format
# table; "sha1 md5 sha256 sha512 bcrypt"), BENCH_DIR (target/bench; the
# database lives there, on the disk being measured).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
HASH_TYPES=${HASH_TYPES:-sha1 md5 sha256 sha512 bcrypt}
SWEEP_ROWS=${SWEEP_ROWS:-100000}
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}" && cd "${BENCH_DIR:-target/bench}" && pwd)

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bench: wrk is missing; install it with: apt-get install wrk" >&2
    exit 1
  fi
fi

cargo build --release --quiet --bin registry-rubber --example sqlite_commit_rate
BIN=target/release/registry-rubber
RAW=target/release/examples/sqlite_commit_rate

SERVICE_PID=
stop_service() {
  if [ -n "$SERVICE_PID" ] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    kill -TERM "$SERVICE_PID"
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  SERVICE_PID=
}
trap stop_service EXIT

# start_service HASH_TYPE [EXPIRED_ROWS]: a fresh database (with that many
# already expired users), the service on a free port.
start_service() {
  local hash_type=$1 expired=${2:-0}
  rm -f "$BENCH_DIR"/users.sqlite*
  export RUBBER_DATABASE_URL="sqlite://$BENCH_DIR/users.sqlite"
  export RUBBER_HASH_TYPE=$hash_type RUBBER_BCRYPT_COST=10 RUBBER_SWEEP_INTERVAL=1
  "$BIN" migrate >/dev/null
  if [ "$expired" -gt 0 ]; then
    sqlite3 "$BENCH_DIR/users.sqlite" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $expired)
      INSERT INTO users (username, password, created_at, expires_at)
      SELECT 'expired-' || i, '{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=', 1000000000, 1000000600 FROM n;"
  fi
  rm -f "$BENCH_DIR/service.log"
  RUBBER_LISTEN=127.0.0.1:0 RUBBER_LOG_FORMAT=json "$BIN" serve 2>"$BENCH_DIR/service.log" &
  SERVICE_PID=$!
  local deadline=$((SECONDS + 10))
  ADDR=
  while [ -z "$ADDR" ]; do
    ADDR=$(grep -o '"address":"[0-9.:]*"' "$BENCH_DIR/service.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
    [ $SECONDS -lt $deadline ] || { echo "bench: service did not start" >&2; cat "$BENCH_DIR/service.log" >&2; exit 1; }
    [ -n "$ADDR" ] || sleep 0.05
  done
  until curl -fsS "http://$ADDR/healthz" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "bench: service not healthy" >&2; exit 1; }
    sleep 0.05
  done
}

# run_wrk SCRIPT SECONDS: prints the RESULT line.
run_wrk() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${2}s" --timeout 5s -s "bench/$1" "http://$ADDR" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rate() { awk -v r="$(field requests "$1")" -v s="$(field seconds "$1")" 'BEGIN {printf "%.0f", r/s}'; }

echo "== registry-rubber benchmark: $RUNS runs x ${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads"
echo "   machine: $(nproc) cores; database directory: $BENCH_DIR ($(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}'))"

raw=(); adds=(); add_p50=(); add_p99=(); add_errors=(); errs=(); err_p50=(); err_p99=()
start_service sha1
for run in $(seq "$RUNS"); do
  raw+=("$("$RAW" "$BENCH_DIR" 2 | awk '{print $2}')")
  r=$(run_wrk add.lua "$DURATION")
  adds+=("$(rate "$r")"); add_p50+=("$(field p50_ms "$r")"); add_p99+=("$(field p99_ms "$r")"); add_errors+=("$(field errors "$r")")
  r=$(run_wrk error.lua "$DURATION")
  errs+=("$(rate "$r")"); err_p50+=("$(field p50_ms "$r")"); err_p99+=("$(field p99_ms "$r")")
  echo "   run $run: raw ${raw[-1]} commits/s; adds ${adds[-1]}/s p50 ${add_p50[-1]} ms p99 ${add_p99[-1]} ms (${add_errors[-1]} errors); error answers ${errs[-1]}/s"
done
stored=$(sqlite3 "$BENCH_DIR/users.sqlite" 'SELECT count(*) FROM users' 2>/dev/null || echo "?")
stop_service

m() { printf '%s\n' "$@" | median; }
RAW_M=$(m "${raw[@]}"); ADD_M=$(m "${adds[@]}"); ERR_M=$(m "${errs[@]}")
echo
echo "== medians (hash_type sha1, the original's format)"
printf '%-44s %10s\n' "raw SQLite durable commits/s (1 row each)" "$RAW_M"
printf '%-44s %10s   (%.1fx raw)\n' "durable adds/s" "$ADD_M" "$(awk -v a="$ADD_M" -v r="$RAW_M" 'BEGIN {print a/r}')"
printf '%-44s %10s ms / %s ms\n' "add latency p50 / p99" "$(m "${add_p50[@]}")" "$(m "${add_p99[@]}")"
printf '%-44s %10s   (%.1fx raw)\n' "error answers/s" "$ERR_M" "$(awk -v a="$ERR_M" -v r="$RAW_M" 'BEGIN {print a/r}')"
printf '%-44s %10s ms / %s ms\n' "error latency p50 / p99" "$(m "${err_p50[@]}")" "$(m "${err_p99[@]}")"
printf '%-44s %10s\n' "non-2xx or failed adds (all runs)" "$(printf '%s\n' "${add_errors[@]}" | awk '{s+=$1} END {print s}')"
printf '%-44s %10s\n' "users in the table afterwards" "$stored"

echo
echo "== longest add latency while the sweeper deletes $SWEEP_ROWS expired users (hash_type sha1, ${DURATION}s each)"
sweep_max=(); calm_max=(); sweep_p99=(); calm_p99=(); swept=()
for run in $(seq "$RUNS"); do
  start_service sha1
  r=$(run_wrk add.lua "$DURATION"); calm_max+=("$(field max_ms "$r")"); calm_p99+=("$(field p99_ms "$r")")
  stop_service
  start_service sha1 "$SWEEP_ROWS"
  # The first sweep starts one second after start-up, while wrk is running.
  r=$(run_wrk add.lua "$DURATION"); sweep_max+=("$(field max_ms "$r")"); sweep_p99+=("$(field p99_ms "$r")")
  stop_service
  swept+=("$(grep '"action":"sweep"' "$BENCH_DIR/service.log" | grep -o '"removed":[0-9]*' | cut -d: -f2 | awk '{s+=$1} END {print s+0}')")
  echo "   run $run: max add latency ${calm_max[-1]} ms with nothing to sweep, ${sweep_max[-1]} ms while sweeping (${swept[-1]} swept)"
done
printf '%-44s %10s ms   (p99 %s ms)\n' "longest add, nothing to sweep (median)" "$(m "${calm_max[@]}")" "$(m "${calm_p99[@]}")"
printf '%-44s %10s ms   (p99 %s ms)\n' "longest add, sweeping (median)" "$(m "${sweep_max[@]}")" "$(m "${sweep_p99[@]}")"
printf '%-44s %10s\n' "expired users swept per run (median)" "$(m "${swept[@]}")"

echo
echo "== adds/s by hash_type (one run of ${DURATION}s each, same machine, bcrypt at cost 10)"
for h in $HASH_TYPES; do
  start_service "$h"
  r=$(run_wrk add.lua "$DURATION")
  stop_service
  printf '%-8s %8s adds/s   p50 %8s ms   p99 %8s ms   (%.2fx raw)\n' "$h" "$(rate "$r")" "$(field p50_ms "$r")" "$(field p99_ms "$r")" \
    "$(awk -v a="$(rate "$r")" -v r="$RAW_M" 'BEGIN {print a/r}')"
done
