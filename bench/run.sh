#!/usr/bin/env bash
# Benchmark: durable adds/s, error answers/s and p50/p99 latency at 32
# connections, and in the same run the raw durable single-row commit rate of
# SQLite on the same disk, so that every figure is also a ratio.
#
#   bench/run.sh                 # median of 3 runs of 5 s each
#   RUNS=5 DURATION=10 bench/run.sh
#
# A second part measures adds/s for each hash format. Adds while the sweeper
# deletes expired users are measured by bench/million.sh.
#
# Prints every run's p50, p99, p99.9 and max; writes $BENCH_DIR/results.md
# and a latency plot per scenario ($BENCH_DIR/plots).
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
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}" && cd "${BENCH_DIR:-target/bench}" && pwd)

source bench/lib.sh
trap stop_service EXIT

# start_users HASH_TYPE: a fresh database, the service on a free port.
start_users() {
  local hash_type=$1
  rm -f "$BENCH_DIR"/users.sqlite*
  export RUBBER_DATABASE_URL="sqlite://$BENCH_DIR/users.sqlite"
  export RUBBER_HASH_TYPE=$hash_type RUBBER_BCRYPT_COST=10
  "$BIN" migrate >/dev/null
  start_service
}

echo "== registry-rubber benchmark: $RUNS runs x ${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads"
echo "   machine: $(nproc) cores; database directory: $BENCH_DIR ($(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}'))"

md_start "Adds and error answers on SQLite"
md "Service log level: ${RUBBER_LOG_LEVEL:-info (the default)}; hash_type sha1 unless said; $RUNS runs of ${DURATION}s." ""
md_runs_header
raw=(); adds=(); add_p50=(); add_p99=(); add_p999=(); add_max=(); add_errors=(); errs=(); err_p50=(); err_p99=(); err_max=()
start_users sha1
for run in $(seq "$RUNS"); do
  raw+=("$("$RAW" "$BENCH_DIR" 2 | awk '{print $2}')")
  r=$(SCENARIO=adds run_wrk add.lua "$DURATION" "http://$ADDR")
  md_run adds "$run" "$r"
  adds+=("$(rate "$r")"); add_p50+=("$(field p50_ms "$r")"); add_p99+=("$(field p99_ms "$r")"); add_max+=("$(field max_ms "$r")")
  add_p999+=("$(field p999_ms "$r")"); add_errors+=("$(field errors "$r")")
  r=$(SCENARIO=error-answers run_wrk error.lua "$DURATION" "http://$ADDR")
  md_run "error answers" "$run" "$r"
  errs+=("$(rate "$r")"); err_p50+=("$(field p50_ms "$r")"); err_p99+=("$(field p99_ms "$r")"); err_max+=("$(field max_ms "$r")")
  md "| raw SQLite commits/s | $run | ${raw[-1]} | | | | | |"
  echo "   run $run: raw ${raw[-1]} commits/s; adds ${adds[-1]}/s p50 ${add_p50[-1]} ms p99 ${add_p99[-1]} ms p99.9 ${add_p999[-1]} ms max ${add_max[-1]} ms (${add_errors[-1]} errors); error answers ${errs[-1]}/s p99 ${err_p99[-1]} ms max ${err_max[-1]} ms"
done
stored=$(sqlite3 "$BENCH_DIR/users.sqlite" 'SELECT count(*) FROM users' 2>/dev/null || echo "?")
stop_service

RAW_M=$(m "${raw[@]}"); ADD_M=$(m "${adds[@]}"); ERR_M=$(m "${errs[@]}")
echo
echo "== medians (hash_type sha1, the original's format)"
printf '%-44s %10s\n' "raw SQLite durable commits/s (1 row each)" "$RAW_M"
printf '%-44s %10s   (%.1fx raw)\n' "durable adds/s" "$ADD_M" "$(awk -v a="$ADD_M" -v r="$RAW_M" 'BEGIN {print a/r}')"
printf '%-44s %10s ms / %s ms / %s ms\n' "add latency p50 / p99 / p99.9" "$(m "${add_p50[@]}")" "$(m "${add_p99[@]}")" "$(m "${add_p999[@]}")"
printf '%-44s %10s ms   (per run: %s)\n' "add latency p99, worst run" "$(printf '%s\n' "${add_p99[@]}" | sort -g | tail -1)" "${add_p99[*]}"
printf '%-44s %10s ms   (per run: %s)\n' "longest add, worst run" "$(printf '%s\n' "${add_max[@]}" | sort -g | tail -1)" "${add_max[*]}"
printf '%-44s %10s   (%.1fx raw)\n' "error answers/s" "$ERR_M" "$(awk -v a="$ERR_M" -v r="$RAW_M" 'BEGIN {print a/r}')"
printf '%-44s %10s ms / %s ms\n' "error latency p50 / p99" "$(m "${err_p50[@]}")" "$(m "${err_p99[@]}")"
printf '%-44s %10s ms   (per run: %s)\n' "longest error answer, worst run" "$(printf '%s\n' "${err_max[@]}" | sort -g | tail -1)" "${err_max[*]}"
printf '%-44s %10s\n' "non-2xx or failed adds (all runs)" "$(printf '%s\n' "${add_errors[@]}" | awk '{s+=$1} END {print s}')"
printf '%-44s %10s\n' "users in the table afterwards" "$stored"
md "" "| medians | figure | ratio |" "|---|---|---|" \
  "| raw SQLite durable commits/s, one row each | $RAW_M | 1x |" \
  "| durable adds/s | $ADD_M | $(ratio "$ADD_M" "$RAW_M")x raw |" \
  "| add p50 / p99 / p99.9 | $(m "${add_p50[@]}") / $(m "${add_p99[@]}") / $(m "${add_p999[@]}") ms | |" \
  "| add p99 per run / max per run | ${add_p99[*]} / ${add_max[*]} ms | |" \
  "| error answers/s | $ERR_M | $(ratio "$ERR_M" "$RAW_M")x raw |" \
  "| error p50 / p99 | $(m "${err_p50[@]}") / $(m "${err_p99[@]}") ms | |" \
  "| error p99 per run / max per run | ${err_p99[*]} / ${err_max[*]} ms | |" \
  "| failed or non-2xx adds | $(printf '%s\n' "${add_errors[@]}" | awk '{s+=$1} END {print s}') of $stored stored | |"

echo
echo "== adds/s by hash_type (one run of ${DURATION}s each, same machine, bcrypt at cost 10)"
md "" "## Adds by hash_type (one run each, bcrypt at cost 10)" "" "| hash_type | adds/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | ratio to raw |" "|---|---|---|---|---|---|---|---|"
for h in $HASH_TYPES; do
  start_users "$h"
  r=$(SCENARIO=adds-$h run_wrk add.lua "$DURATION" "http://$ADDR")
  stop_service
  md "| $h | $(rate "$r") | $(field p50_ms "$r") | $(field p99_ms "$r") | $(field p999_ms "$r") | $(field max_ms "$r") | $(field errors "$r") | $(ratio "$(rate "$r")" "$RAW_M")x |"
  printf '%-8s %8s adds/s   p50 %8s ms   p99 %8s ms   max %8s ms   (%.2fx raw)\n' "$h" "$(rate "$r")" "$(field p50_ms "$r")" "$(field p99_ms "$r")" "$(field max_ms "$r")" \
    "$(awk -v a="$(rate "$r")" -v r="$RAW_M" 'BEGIN {print a/r}')"
done
plot_latencies
echo "   results: $RESULTS"
