#!/usr/bin/env bash
# A million rows: the sweeper deleting SWEEP_ROWS (1,000,000) expired users
# while adds run flat out, and the original tool's database with as many
# rows adopted in place by `registry-rubber migrate`.
#
#   bench/million.sh                    # 3 runs of each part
#   RUNS=1 SWEEP_ROWS=100000 bench/million.sh
#
# Sweep, each run: a fresh SQLite database holding SWEEP_ROWS users expired
# long ago (one copy of a file made once), the service on it (hash_type
# sha1, sweep_interval 1 s, wal_limit WAL_LIMIT MB, warn logs), adds from
# wrk (bench/add.lua, 32 connections) from the moment it answers until the
# sweep is over (wrk is stopped with SIGINT then and reports); the WAL file
# and the metric rubber_expired_total are sampled every 0.1 s. Reports the
# adds' rate, p50, p99, p99.9 and max while the sweep ran, how long the
# sweep took (from its start, one sweep_interval after the service started,
# to the sample that saw the metric count every row: 0.1 s resolution),
# and the largest WAL file seen. The same adds for DURATION seconds on a
# database with nothing to sweep give the baseline, in the same run.
# Fails (exit 1) when the WAL file passed WAL_LIMIT MB, when the sweep did
# not remove every row within SWEEP_TIMEOUT seconds, or when an add failed.
# Latency is reported, never checked (the machine may run other work); the
# issue's target is p99.9 at most 50 ms while sweeping.
#
# Adoption, each run: a copy of the original's SQLite database (table users
# (username integer PRIMARY KEY, password varchar(64)), rollback journal,
# ADOPT_ROWS (1,000,000) users with epoch names and {SHA} hashes) migrated
# in place; the migrate command is timed and the rows counted afterwards.
# The issue's target: under 10 s.
#
# Environment: RUNS (3), DURATION (5), CONNECTIONS (32), THREADS (2),
# SWEEP_ROWS (1000000), ADOPT_ROWS (1000000), WAL_LIMIT (64),
# SWEEP_TIMEOUT (300), LOG_LEVEL (warn), BENCH_DIR (target/bench/million;
# the databases live there, on the disk being measured).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
SWEEP_ROWS=${SWEEP_ROWS:-1000000}
ADOPT_ROWS=${ADOPT_ROWS:-1000000}
WAL_LIMIT=${WAL_LIMIT:-64}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-300}
LOG_LEVEL=${LOG_LEVEL:-warn,registry_rubber::startup=info}
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}/million" && cd "${BENCH_DIR:-target/bench}/million" && pwd)
SAMPLER_PID=
WRK_PID=

command -v sqlite3 >/dev/null || { echo "bench: sqlite3 is missing (apt-get install sqlite3)" >&2; exit 1; }
source bench/lib.sh
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  [ -z "$WRK_PID" ] || kill "$WRK_PID" 2>/dev/null || true
  [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
  stop_service
}
trap cleanup EXIT

MB=1048576
DB=$BENCH_DIR/users.sqlite
export RUBBER_DATABASE_URL="sqlite://$DB" RUBBER_HASH_TYPE=sha1 RUBBER_SWEEP_INTERVAL=1
export RUBBER_WAL_LIMIT=$WAL_LIMIT RUBBER_LOG_LEVEL=$LOG_LEVEL
mb() { awk -v b="$1" -v m=$MB 'BEGIN { printf "%.1f", b / m }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

md_start "A million rows: swept while adds run, and the original's database adopted"
echo "== a million rows: $RUNS runs, $CONNECTIONS connections, $THREADS wrk threads, wal_limit $WAL_LIMIT MB, hash_type sha1"
echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); database directory: $BENCH_DIR"

# The database to sweep, made once: migrated, SWEEP_ROWS users expired in 2001.
rm -f "$BENCH_DIR"/*.sqlite*
"$BIN" migrate >/dev/null
sqlite3 "$DB" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $SWEEP_ROWS)
  INSERT INTO users (username, password, created_at, expires_at)
  SELECT 'expired-' || i, '{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=', 1000000000, 1000000600 FROM n;"
mv "$DB" "$BENCH_DIR/expired.sqlite"
rm -f "$DB"*

# One line every 0.1 s while the service runs: epoch seconds, WAL bytes,
# rubber_expired_total.
sample() {
  while kill -0 "$SERVICE_PID" 2>/dev/null; do
    echo "$(now) $(stat -c %s "$DB-wal" 2>/dev/null || echo 0) $(curl -s "http://$ADDR/metrics" | awk '$1 == "rubber_expired_total" {print $2}')"
    sleep 0.1
  done
}

md "## Adds while the sweeper deletes $SWEEP_ROWS expired users" ""
md "| run | adds | adds/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | sweep s | largest WAL MB |" "|---|---|---|---|---|---|---|---|---|---|"
calm=(); calm_p99=(); calm_p999=(); calm_max=(); sweep=(); sweep_p50=(); sweep_p99=(); sweep_p999=(); sweep_max=(); sweep_secs=(); wals=()
failed=0
status=0
for run in $(seq "$RUNS"); do
  # The baseline: nothing to sweep.
  rm -f "$DB"*
  "$BIN" migrate >/dev/null
  start_service
  r=$(SCENARIO=adds-nothing-to-sweep run_wrk add.lua "$DURATION" "http://$ADDR")
  stop_service
  calm+=("$(rate "$r")"); calm_p99+=("$(field p99_ms "$r")"); calm_p999+=("$(field p999_ms "$r")"); calm_max+=("$(field max_ms "$r")")
  failed=$((failed + $(field errors "$r")))
  md "| $run | nothing to sweep, ${DURATION}s | ${calm[-1]} | $(field p50_ms "$r") | ${calm_p99[-1]} | ${calm_p999[-1]} | ${calm_max[-1]} | $(field errors "$r") | | |"

  # The sweep: wrk from the moment the service answers until every row is gone.
  rm -f "$DB"*
  cp "$BENCH_DIR/expired.sqlite" "$DB"
  # On disk before the service starts: otherwise the first checkpoint's
  # fsync writes the whole copy out, a pause that is the copy's, not the
  # sweep's.
  sync "$DB"
  start_service
  ready=$(now)
  sample >"$BENCH_DIR/samples" &
  SAMPLER_PID=$!
  LATENCY_FILE=$(SCENARIO=adds-while-sweeping latency_file) wrk -t"$THREADS" -c"$CONNECTIONS" -d3600s --timeout 10s \
    -s bench/add.lua "http://$ADDR" >"$BENCH_DIR/wrk.out" &
  WRK_PID=$!
  swept_at=
  while [ -z "$swept_at" ]; do
    sleep 0.1
    swept_at=$(awk -v n="$SWEEP_ROWS" '$3 >= n {print $1; exit}' "$BENCH_DIR/samples")
    if [ -z "$swept_at" ] && [ "$(elapsed "$ready" "$(now)" | cut -d. -f1)" -ge "$SWEEP_TIMEOUT" ]; then
      echo "bench: the sweep did not finish within $SWEEP_TIMEOUT s" >&2; exit 1
    fi
  done
  # Interrupted, wrk stops and reports.
  kill -INT "$WRK_PID" 2>/dev/null || true
  wait "$WRK_PID" || true
  WRK_PID=
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=
  stop_service
  r=$(grep '^RESULT' "$BENCH_DIR/wrk.out" || true)
  [ -n "$r" ] || { echo "bench: wrk gave no result for the sweep" >&2; exit 1; }
  wal=$(awk '$2 > w { w = $2 } END { print w + 0 }' "$BENCH_DIR/samples")
  sweep+=("$(rate "$r")"); sweep_p50+=("$(field p50_ms "$r")"); sweep_p99+=("$(field p99_ms "$r")")
  sweep_p999+=("$(field p999_ms "$r")"); sweep_max+=("$(field max_ms "$r")"); wals+=("$wal")
  sweep_secs+=("$(awk -v a="$ready" -v b="$swept_at" -v i="$RUBBER_SWEEP_INTERVAL" 'BEGIN { printf "%.1f", b - a - i }')")
  failed=$((failed + $(field errors "$r")))
  md "| $run | while sweeping, $(field seconds "$r") s | ${sweep[-1]} | ${sweep_p50[-1]} | ${sweep_p99[-1]} | ${sweep_p999[-1]} | ${sweep_max[-1]} | $(field errors "$r") | ${sweep_secs[-1]} | $(mb "$wal") |"
  echo "   run $run: nothing to sweep: ${calm[-1]} adds/s p99 ${calm_p99[-1]} ms p99.9 ${calm_p999[-1]} ms max ${calm_max[-1]} ms;" \
    "sweeping: ${sweep[-1]} adds/s p50 ${sweep_p50[-1]} ms p99 ${sweep_p99[-1]} ms p99.9 ${sweep_p999[-1]} ms max ${sweep_max[-1]} ms;" \
    "$SWEEP_ROWS swept in ${sweep_secs[-1]} s; largest WAL $(mb "$wal") MB"
  if [ "$wal" -gt $((WAL_LIMIT * MB)) ]; then
    echo "bench: FAILED: the WAL file reached $(mb "$wal") MB during the sweep, beyond wal_limit $WAL_LIMIT MB" >&2; status=1
  fi
done
WAL_MAX=$(worst "${wals[@]}")
echo
echo "== medians, adds while $SWEEP_ROWS expired users are swept (hash_type sha1)"
printf '%-46s %8s adds/s   p99 %s ms   p99.9 %s ms   max %s ms (worst run)\n' "nothing to sweep" \
  "$(m "${calm[@]}")" "$(m "${calm_p99[@]}")" "$(m "${calm_p999[@]}")" "$(worst "${calm_max[@]}")"
printf '%-46s %8s adds/s   p99 %s ms   p99.9 %s ms   max %s ms (worst run)\n' "while sweeping" \
  "$(m "${sweep[@]}")" "$(m "${sweep_p99[@]}")" "$(m "${sweep_p999[@]}")" "$(worst "${sweep_max[@]}")"
printf '%-46s %8s   (runs: %s; target 50 ms)\n' "p99.9 while sweeping, worst run (ms)" "$(worst "${sweep_p999[@]}")" "${sweep_p999[*]}"
printf '%-46s %8s s  (runs: %s)\n' "sweep of $SWEEP_ROWS rows" "$(m "${sweep_secs[@]}")" "${sweep_secs[*]}"
printf '%-46s %8s MB (bound %s MB)\n' "largest WAL file during the sweeps" "$(mb "$WAL_MAX")" "$WAL_LIMIT"
md "| median | | $(m "${sweep[@]}") | $(m "${sweep_p50[@]}") | $(m "${sweep_p99[@]}") | $(m "${sweep_p999[@]}") | $(worst "${sweep_max[@]}") (worst) | $failed (all) | $(m "${sweep_secs[@]}") | $(mb "$WAL_MAX") (largest) |" ""
md "Target (issue 13): p99.9 of adds while sweeping at most 50 ms: worst run $(worst "${sweep_p999[@]}") ms; WAL within $WAL_LIMIT MB: largest $(mb "$WAL_MAX") MB." ""
if [ "$failed" != 0 ]; then
  echo "bench: FAILED: $failed adds failed" >&2; status=1
fi

# The original's database, made once, then adopted in place RUNS times.
ORIGINAL=$BENCH_DIR/original.sqlite
rm -f "$ORIGINAL"*
sqlite3 "$ORIGINAL" "CREATE TABLE users (username integer PRIMARY KEY, password varchar(64));
  WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $ADOPT_ROWS - 1)
  INSERT INTO users SELECT 1423382819 + i, '{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=' FROM n;"
md "## The original's database with $ADOPT_ROWS users adopted by \`migrate\`" "" "| run | seconds | users afterwards |" "|---|---|---|"
adopt=()
for run in $(seq "$RUNS"); do
  rm -f "$DB"*
  cp "$ORIGINAL" "$DB"
  started=$(now)
  "$BIN" migrate >"$BENCH_DIR/migrate.out" 2>&1
  adopt+=("$(elapsed "$started" "$(now)")")
  users=$(sqlite3 "$DB" 'SELECT count(*) FROM users WHERE created_at IS NOT NULL')
  md "| $run | ${adopt[-1]} | $users |"
  echo "   adoption run $run: $ADOPT_ROWS rows migrated in place in ${adopt[-1]} s, $users users afterwards"
  if [ "$users" != "$ADOPT_ROWS" ]; then
    echo "bench: FAILED: $users users after the adoption, not $ADOPT_ROWS" >&2; status=1
  fi
done
printf '%-46s %8s s  (runs: %s; target under 10 s)\n' "the original's $ADOPT_ROWS rows adopted" "$(m "${adopt[@]}")" "${adopt[*]}"
md "| median | $(m "${adopt[@]}") | |" "" "Target (issue 13): under 10 s."
plot_latencies
rm -f "$DB"* "$ORIGINAL" "$BENCH_DIR/expired.sqlite"
echo "   results: $RESULTS"
exit $status
