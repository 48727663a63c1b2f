#!/usr/bin/env bash
# Soak: adds flat out (wrk, 32 connections, hash_type sha1) for DURATION
# seconds, as back-to-back wrk runs of INTERVAL seconds, while another
# process looks users up in the same file as Apache does (its own
# connection, 1 s busy timeout). The size of the SQLite WAL file and the
# service's RSS are sampled every second.
#
#   bench/soak.sh                          # ten minutes
#   BUILD=debug DURATION=60 INTERVAL=20 P99_LIMIT=off bench/soak.sh
#                                          # the one-minute check of scripts/test.sh
#
# Reports, for every run: adds/s, p50, p99 and the longest add, errors, the
# largest WAL file and RSS seen; then the largest WAL of the whole soak, the
# WAL file SETTLE seconds after the load stopped, RSS idle and at peak, and
# the lookups made and refused.
#
# Writes $BENCH_DIR/results.md and a latency plot with a line per run.
#
# Fails (exit 1) when the WAL file ever exceeded WAL_LIMIT, when it did not
# shrink to WAL_AFTER MB or less within SETTLE seconds of the load stopping,
# or when a lookup or an add failed. Otherwise exits 3 when the p99 of adds
# in any run was above P99_LIMIT ms: the latency target missed, told apart
# from a failure (a run with no p99 to read counts as a miss).
# P99_LIMIT=off reports latency without checking it (what scripts/test.sh
# does: a debug build on a machine busy with other work is no measure of
# latency). Exits 2 on a bad P99_LIMIT. Every verdict is also written to
# results.md.
#
# Environment: DURATION (600), INTERVAL (60), CONNECTIONS (32), THREADS (2),
# WAL_LIMIT (64, the service's wal_limit in MB), WAL_AFTER (16), SETTLE (5),
# P99_LIMIT (10), BENCH_DIR (target/bench), BUILD (release; debug measures
# the test build).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
INTERVAL=${INTERVAL:-60}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WAL_LIMIT=${WAL_LIMIT:-64}
WAL_AFTER=${WAL_AFTER:-16}
SETTLE=${SETTLE:-5}
P99_LIMIT=${P99_LIMIT:-10}
# Whether $1 is a number of milliseconds: 10, 7.5.
is_ms() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
if [ "$P99_LIMIT" != off ] && ! is_ms "$P99_LIMIT"; then
  echo "soak: P99_LIMIT must be milliseconds (10, 7.5) or off, not '$P99_LIMIT'" >&2; exit 2
fi
RUNS=$(((DURATION + INTERVAL - 1) / INTERVAL))
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}/soak" && cd "${BENCH_DIR:-target/bench}/soak" && pwd)
SAMPLER_PID=

source bench/lib.sh
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
  stop_service
}
trap cleanup EXIT

DB=$BENCH_DIR/users.sqlite
MB=1048576
rm -f "$DB"*
export RUBBER_DATABASE_URL="sqlite://$DB" RUBBER_HASH_TYPE=sha1 RUBBER_WAL_LIMIT=$WAL_LIMIT
export RUBBER_LOG_LEVEL=${LOG_LEVEL:-warn,registry_rubber::startup=info}
"$BIN" migrate >/dev/null
start_service

# One line a second: epoch seconds, WAL file bytes, RSS kB.
sample() {
  while kill -0 "$SERVICE_PID" 2>/dev/null; do
    echo "$(date +%s) $(stat -c %s "$DB-wal" 2>/dev/null || echo 0) $(awk '/^VmRSS/ {print $2}' "/proc/$SERVICE_PID/status" 2>/dev/null || echo 0)"
    sleep 1
  done
}
sample >"$BENCH_DIR/samples" &
SAMPLER_PID=$!
sleep 1
rss_idle=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVICE_PID/status")

# The largest WAL bytes and RSS kB sampled from epoch second $1 on.
since() { awk -v t="$1" '$1 >= t { if ($2 > w) w = $2; if ($3 > r) r = $3 } END { printf "%d %d\n", w, r }' "$BENCH_DIR/samples"; }
mb() { awk -v b="$1" -v m=$MB 'BEGIN { printf "%.1f", b / m }'; }

md_start "Soak: adds flat out for ${DURATION}s, the WAL bound checked"
md "SQLite, hash_type sha1, wal_limit $WAL_LIMIT MB, log level $RUBBER_LOG_LEVEL; $RUNS runs of up to ${INTERVAL}s back to back;" \
  "another process looks users up in the same file meanwhile (1 s busy timeout)." ""
md "| run | adds/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | largest WAL MB | largest RSS MB |" "|---|---|---|---|---|---|---|---|---|"
echo "== soak: adds for ${DURATION}s as $RUNS runs, $CONNECTIONS connections, wal_limit $WAL_LIMIT MB, hash_type sha1"
echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); database directory: $BENCH_DIR; build: $OUT"
"$LOOKUPS" "$DB" "$DURATION" >"$BENCH_DIR/lookups" 2>"$BENCH_DIR/lookups.err" &
lookups_pid=$!
failed_adds=0
p99s=(); maxes=()
soak_started=$(date +%s)
for run in $(seq "$RUNS"); do
  left=$((DURATION - (run - 1) * INTERVAL))
  seconds=$((left < INTERVAL ? left : INTERVAL))
  started=$(date +%s)
  r=$(SCENARIO=soak-adds run_wrk add.lua "$seconds" "http://$ADDR")
  read -r wal rss < <(since "$started")
  p99s+=("$(field p99_ms "$r")"); maxes+=("$(field max_ms "$r")")
  failed_adds=$((failed_adds + $(field errors "$r")))
  printf '   run %2d: %6s adds/s  p50 %7s ms  p99 %7s ms  max %8s ms  errors %s  WAL max %6s MB  RSS max %5s MB\n' \
    "$run" "$(rate "$r")" "$(field p50_ms "$r")" "$(field p99_ms "$r")" "$(field max_ms "$r")" "$(field errors "$r")" \
    "$(mb "$wal")" "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
  md "| $run | $(rate "$r") | $(field p50_ms "$r") | $(field p99_ms "$r") | $(field p999_ms "$r") | $(field max_ms "$r") | $(field errors "$r") | $(mb "$wal") | $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') |"
done
wait "$lookups_pid" || true
sleep "$SETTLE"
wal_after=$(stat -c %s "$DB-wal" 2>/dev/null || echo 0)
read -r wal_max rss_max < <(since "$soak_started")
lookup_result=$(grep '^RESULT' "$BENCH_DIR/lookups" || echo "RESULT lookups=0 errors=1")
stored=$(sqlite3 "$DB" 'SELECT count(*) FROM users' 2>/dev/null || echo "?")

echo
printf '%-46s %10s MB   (bound %s MB)\n' "largest WAL file during the load" "$(mb "$wal_max")" "$WAL_LIMIT"
printf '%-46s %10s MB   (at most %s MB)\n' "WAL file ${SETTLE} s after the load stopped" "$(mb "$wal_after")" "$WAL_AFTER"
printf '%-46s %10s ms   (worst run; runs: %s)\n' "add latency p99" "$(printf '%s\n' "${p99s[@]}" | sort -g | tail -1)" "${p99s[*]}"
printf '%-46s %10s ms   (worst run)\n' "longest add" "$(printf '%s\n' "${maxes[@]}" | sort -g | tail -1)"
printf '%-46s %10s MB idle, %s MB at peak\n' "service RSS" "$(awk -v k="$rss_idle" 'BEGIN { printf "%.1f", k / 1024 }')" \
  "$(awk -v k="$rss_max" 'BEGIN { printf "%.1f", k / 1024 }')"
printf '%-46s %10s   refused %s, p99 %s ms, longest %s ms\n' "lookups by another process (1 s busy timeout)" \
  "$(field lookups "$lookup_result")" "$(field errors "$lookup_result")" "$(field p99_ms "$lookup_result")" "$(field max_ms "$lookup_result")"
printf '%-46s %10s   (failed adds: %s)\n' "users in the table afterwards" "$stored" "$failed_adds"

md "" "| whole soak | figure |" "|---|---|" \
  "| largest WAL file during the load | $(mb "$wal_max") MB (bound $WAL_LIMIT MB) |" \
  "| WAL file ${SETTLE} s after the load stopped | $(mb "$wal_after") MB (at most $WAL_AFTER MB) |" \
  "| add p99, worst run | $(printf '%s\n' "${p99s[@]}" | sort -g | tail -1) ms |" \
  "| longest add | $(printf '%s\n' "${maxes[@]}" | sort -g | tail -1) ms |" \
  "| service RSS idle / at peak | $(awk -v k="$rss_idle" 'BEGIN { printf "%.1f", k / 1024 }') / $(awk -v k="$rss_max" 'BEGIN { printf "%.1f", k / 1024 }') MB |" \
  "| lookups by another process | $(field lookups "$lookup_result"), refused $(field errors "$lookup_result"), p99 $(field p99_ms "$lookup_result") ms, longest $(field max_ms "$lookup_result") ms |" \
  "| users in the table afterwards | $stored (failed adds: $failed_adds) |"

# Verdicts: each to stderr (failures) or stdout, and to results.md.
status=0
verdicts=()
failed() { echo "soak: FAILED: $1" >&2; verdicts+=("FAILED: $1"); status=1; }
if [ "$wal_max" -gt $((WAL_LIMIT * MB)) ]; then
  failed "the WAL file reached $(mb "$wal_max") MB, beyond its bound of $WAL_LIMIT MB"
fi
if [ "$wal_after" -gt $((WAL_AFTER * MB)) ]; then
  failed "the WAL file still holds $(mb "$wal_after") MB ${SETTLE} s after the load, more than $WAL_AFTER MB"
fi
if [ "$(field errors "$lookup_result")" != 0 ]; then
  failed "lookups were refused"; sort "$BENCH_DIR/lookups.err" | uniq -c | head >&2
fi
if [ "$failed_adds" != 0 ]; then
  failed "$failed_adds adds failed"
fi
if [ "$P99_LIMIT" != off ]; then
  # A run with no p99 to read (wrk reported none) counts as a miss.
  over=()
  for i in "${!p99s[@]}"; do
    p=${p99s[$i]}
    if ! is_ms "$p"; then
      over+=("run $((i + 1)) (no p99)")
    elif awk -v p="$p" -v l="$P99_LIMIT" 'BEGIN { exit !(p > l) }'; then
      over+=("run $((i + 1)) ($p ms)")
    fi
  done
  if [ ${#over[@]} = 0 ]; then
    echo "soak: p99 of adds within $P99_LIMIT ms in every run"
    verdicts+=("p99 of adds within $P99_LIMIT ms in every run")
  else
    missed="p99 of adds above $P99_LIMIT ms in $(printf '%s, ' "${over[@]}" | sed 's/, $//')"
    echo "soak: $missed; see bench/trace.sh for where such a tail comes from" >&2
    verdicts+=("$missed")
    [ "$status" != 0 ] || status=3
  fi
fi
[ ${#verdicts[@]} = 0 ] || md "" "$(printf -- '- %s\n' "${verdicts[@]}")"
plot_latencies
exit $status
