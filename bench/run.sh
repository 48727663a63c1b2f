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

source bench/lib.sh
trap stop_service EXIT

# start_users HASH_TYPE [EXPIRED_ROWS]: a fresh database (with that many
# already expired users), the service on a free port.
start_users() {
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
  start_service
}

echo "== registry-rubber benchmark: $RUNS runs x ${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads"
echo "   machine: $(nproc) cores; database directory: $BENCH_DIR ($(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}'))"

raw=(); adds=(); add_p50=(); add_p99=(); add_max=(); add_errors=(); errs=(); err_p50=(); err_p99=(); err_max=()
start_users sha1
for run in $(seq "$RUNS"); do
  raw+=("$("$RAW" "$BENCH_DIR" 2 | awk '{print $2}')")
  r=$(run_wrk add.lua "$DURATION" "http://$ADDR")
  adds+=("$(rate "$r")"); add_p50+=("$(field p50_ms "$r")"); add_p99+=("$(field p99_ms "$r")"); add_max+=("$(field max_ms "$r")")
  add_errors+=("$(field errors "$r")")
  r=$(run_wrk error.lua "$DURATION" "http://$ADDR")
  errs+=("$(rate "$r")"); err_p50+=("$(field p50_ms "$r")"); err_p99+=("$(field p99_ms "$r")"); err_max+=("$(field max_ms "$r")")
  echo "   run $run: raw ${raw[-1]} commits/s; adds ${adds[-1]}/s p50 ${add_p50[-1]} ms p99 ${add_p99[-1]} ms max ${add_max[-1]} ms (${add_errors[-1]} errors); error answers ${errs[-1]}/s p99 ${err_p99[-1]} ms max ${err_max[-1]} ms"
done
stored=$(sqlite3 "$BENCH_DIR/users.sqlite" 'SELECT count(*) FROM users' 2>/dev/null || echo "?")
stop_service

RAW_M=$(m "${raw[@]}"); ADD_M=$(m "${adds[@]}"); ERR_M=$(m "${errs[@]}")
echo
echo "== medians (hash_type sha1, the original's format)"
printf '%-44s %10s\n' "raw SQLite durable commits/s (1 row each)" "$RAW_M"
printf '%-44s %10s   (%.1fx raw)\n' "durable adds/s" "$ADD_M" "$(awk -v a="$ADD_M" -v r="$RAW_M" 'BEGIN {print a/r}')"
printf '%-44s %10s ms / %s ms\n' "add latency p50 / p99" "$(m "${add_p50[@]}")" "$(m "${add_p99[@]}")"
printf '%-44s %10s ms   (per run: %s)\n' "add latency p99, worst run" "$(printf '%s\n' "${add_p99[@]}" | sort -g | tail -1)" "${add_p99[*]}"
printf '%-44s %10s ms   (per run: %s)\n' "longest add, worst run" "$(printf '%s\n' "${add_max[@]}" | sort -g | tail -1)" "${add_max[*]}"
printf '%-44s %10s   (%.1fx raw)\n' "error answers/s" "$ERR_M" "$(awk -v a="$ERR_M" -v r="$RAW_M" 'BEGIN {print a/r}')"
printf '%-44s %10s ms / %s ms\n' "error latency p50 / p99" "$(m "${err_p50[@]}")" "$(m "${err_p99[@]}")"
printf '%-44s %10s ms   (per run: %s)\n' "longest error answer, worst run" "$(printf '%s\n' "${err_max[@]}" | sort -g | tail -1)" "${err_max[*]}"
printf '%-44s %10s\n' "non-2xx or failed adds (all runs)" "$(printf '%s\n' "${add_errors[@]}" | awk '{s+=$1} END {print s}')"
printf '%-44s %10s\n' "users in the table afterwards" "$stored"

echo
echo "== longest add latency while the sweeper deletes $SWEEP_ROWS expired users (hash_type sha1, ${DURATION}s each)"
sweep_max=(); calm_max=(); sweep_p99=(); calm_p99=(); swept=(); sweep_secs=()
for run in $(seq "$RUNS"); do
  start_users sha1
  r=$(run_wrk add.lua "$DURATION" "http://$ADDR"); calm_max+=("$(field max_ms "$r")"); calm_p99+=("$(field p99_ms "$r")")
  stop_service
  start_users sha1 "$SWEEP_ROWS"
  started=$(date +%s.%N)
  # The first sweep starts one second after start-up, while wrk is running.
  r=$(run_wrk add.lua "$DURATION" "http://$ADDR"); sweep_max+=("$(field max_ms "$r")"); sweep_p99+=("$(field p99_ms "$r")")
  # Let the sweep finish (it may outlast wrk on a busy machine) and time it.
  deadline=$((SECONDS + 120))
  while [ "$(sqlite3 "$BENCH_DIR/users.sqlite" "SELECT count(*) FROM users WHERE username LIKE 'expired-%'")" != 0 ]; do
    [ $SECONDS -lt $deadline ] || { echo "bench: the sweep did not finish" >&2; exit 1; }
    sleep 0.1
  done
  sweep_secs+=("$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a - 1}')")
  stop_service
  swept+=("$( { grep '"action":"sweep"' "$BENCH_DIR/service.log" || true; } | { grep -o '"removed":[0-9]*' || true; } | cut -d: -f2 | awk '{s+=$1} END {print s+0}')")
  echo "   run $run: add p99 ${calm_p99[-1]} ms, max ${calm_max[-1]} ms with nothing to sweep; p99 ${sweep_p99[-1]} ms, max ${sweep_max[-1]} ms while sweeping (${swept[-1]} swept in ${sweep_secs[-1]} s)"
done
printf '%-44s %10s ms   (p99 %s ms)\n' "longest add, nothing to sweep (median)" "$(m "${calm_max[@]}")" "$(m "${calm_p99[@]}")"
printf '%-44s %10s ms   (p99 %s ms)\n' "longest add, sweeping (median)" "$(m "${sweep_max[@]}")" "$(m "${sweep_p99[@]}")"
printf '%-44s %10s in %s s\n' "expired users swept per run (median)" "$(m "${swept[@]}")" "$(m "${sweep_secs[@]}")"

echo
echo "== adds/s by hash_type (one run of ${DURATION}s each, same machine, bcrypt at cost 10)"
for h in $HASH_TYPES; do
  start_users "$h"
  r=$(run_wrk add.lua "$DURATION" "http://$ADDR")
  stop_service
  printf '%-8s %8s adds/s   p50 %8s ms   p99 %8s ms   max %8s ms   (%.2fx raw)\n' "$h" "$(rate "$r")" "$(field p50_ms "$r")" "$(field p99_ms "$r")" "$(field max_ms "$r")" \
    "$(awk -v a="$(rate "$r")" -v r="$RAW_M" 'BEGIN {print a/r}')"
done
