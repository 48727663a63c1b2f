#!/usr/bin/env bash
# Memory: the service's RSS idle, at peak under the heaviest load the bench
# applies, with every cache full, and idle again after the load.
#
#   bench/memory.sh                     # 3 rounds of 10 s of load
#   RUNS=1 DURATION=3 bench/memory.sh
#
# One service runs on SQLite (hash_type sha1, warn logs) with every door
# that checks credentials open: the admin API, the auth_request door and
# the token door (ES256). (The registry's htpasswd file is left out: it takes
# bcrypt hashes only, which would make the adds a test of bcrypt.)
# After start-up it measures RSS idle; then it adds USERS users (mem-N,
# each its own password: USERS defaults to verify_cache_entries + 10%) and
# checks every one of them on the auth_request door, so that the verifier's
# cache (verify_cache_entries, VERIFY_CACHE_ENTRIES here, 10000 by default)
# is full and evicting. Each round then runs at once, for DURATION seconds:
# adds flat out (bench/add.lua, CONNECTIONS connections), checks cycling
# over all USERS users on the auth_request door (bench/users.lua,
# CONNECTIONS connections) and tokens for them from the token door
# (CONNECTIONS/4 connections). RSS (VmRSS of /proc/PID/status) is sampled
# every 0.1 s; after each round, SETTLE seconds without load, it is read
# again. The issue's targets: at most 20 MB idle, at most 64 MB at peak;
# reported, never checked.
#
# Environment: RUNS (3), DURATION (10), CONNECTIONS (32), THREADS (2),
# VERIFY_CACHE_ENTRIES (10000), USERS, SETTLE (5), LOG_LEVEL (warn),
# BENCH_DIR (target/bench/memory).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
VERIFY_CACHE_ENTRIES=${VERIFY_CACHE_ENTRIES:-10000}
USERS=${USERS:-$((VERIFY_CACHE_ENTRIES + VERIFY_CACHE_ENTRIES / 10))}
SETTLE=${SETTLE:-5}
LOG_LEVEL=${LOG_LEVEL:-warn,registry_rubber::startup=info}
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}/memory" && cd "${BENCH_DIR:-target/bench}/memory" && pwd)
SAMPLER_PID=
LOAD_PIDS=()

source bench/lib.sh
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  local pid
  for pid in "${LOAD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
  stop_service
}
trap cleanup EXIT

DB=$BENCH_DIR/users.sqlite
rm -f "$DB"*
openssl ecparam -name prime256v1 -genkey -noout -out "$BENCH_DIR/signing.key" 2>/dev/null
openssl req -new -x509 -key "$BENCH_DIR/signing.key" -out "$BENCH_DIR/signing.crt" -days 1 \
  -subj /CN=registry-rubber-token 2>/dev/null
export RUBBER_DATABASE_URL="sqlite://$DB" RUBBER_HASH_TYPE=sha1 RUBBER_LOG_LEVEL=$LOG_LEVEL \
  RUBBER_VERIFY_CACHE_ENTRIES=$VERIFY_CACHE_ENTRIES \
  RUBBER_AUTH_LISTEN=127.0.0.1:0 RUBBER_TOKEN_LISTEN=127.0.0.1:0 \
  RUBBER_TOKEN_KEY=$BENCH_DIR/signing.key RUBBER_TOKEN_CERT=$BENCH_DIR/signing.crt
"$BIN" migrate >/dev/null
start_service
[ -n "$AUTH_ADDR" ] || { echo "bench: the auth_request door did not open" >&2; exit 1; }
TOKEN_ADDR=$(service_address token)
[ -n "$TOKEN_ADDR" ] || { echo "bench: the token door did not open" >&2; exit 1; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVICE_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
verifications() { curl -s "http://$ADDR/metrics" | awk -v how="$1" 'index($1, "rubber_verifications_total{how=\"" how "\"}") == 1 {print $2}'; }

md_start "Memory: RSS idle, at peak under load with every cache full, idle again"
echo "== memory: verify_cache_entries $VERIFY_CACHE_ENTRIES, $USERS users, $RUNS rounds of ${DURATION}s of adds + checks + tokens"
echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); build: $OUT"
sleep 1
RSS_START=$(rss_kb)
echo "   RSS after start-up, idle: $(mib "$RSS_START") MB"

# USERS users, each its own password, added over 16 kept-alive connections;
# then each checked once on the auth_request door (one connection, one after
# another: curl in parallel loses transfers here): a miss, a hashing, and
# an entry in the verifier's cache.
for n in $(seq "$USERS"); do
  printf 'url = "http://%s/add?user=mem-%s&passwd=Mem-Passw0rd-%s"\noutput = "/dev/null"\n' "$ADDR" "$n" "$n"
done >"$BENCH_DIR/add-users.cfg"
# A credential is an option of its own transfer: `next` separates them.
for n in $(seq "$USERS"); do
  printf 'url = "http://%s/auth"\nuser = "mem-%s:Mem-Passw0rd-%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code} %%{exitcode}\\n"\nnext\n' \
    "$AUTH_ADDR" "$n" "$n"
done >"$BENCH_DIR/check-users.cfg"
added=$(curl -s --parallel --parallel-max 16 -K "$BENCH_DIR/add-users.cfg" -w '%{http_code}\n' 2>/dev/null | grep -c '^200$' || true)
[ "$added" = "$USERS" ] || { echo "bench: $added of $USERS users added" >&2; exit 1; }
curl -s -K "$BENCH_DIR/check-users.cfg" >"$BENCH_DIR/check-users.codes" 2>/dev/null || true
checked=$(grep -c "^200 " "$BENCH_DIR/check-users.codes" || true)
[ "$checked" = "$USERS" ] || { echo "bench: $checked of $USERS checks allowed" >&2; exit 1; }
sleep 1
RSS_FULL=$(rss_kb)
echo "   RSS with $USERS users added and checked (cache full), idle: $(mib "$RSS_FULL") MB; verifications hashed $(verifications hashed), cached $(verifications cached)"

# One line every 0.1 s: epoch seconds, RSS kB.
sample() {
  while kill -0 "$SERVICE_PID" 2>/dev/null; do
    echo "$(date +%s.%N) $(rss_kb 2>/dev/null || echo 0)"
    sleep 0.1
  done
}
sample >"$BENCH_DIR/samples" &
SAMPLER_PID=$!

TOKEN_URL="http://$TOKEN_ADDR/token?service=registry&scope=repository:team/app:pull,push"
md "Service: SQLite, hash_type sha1, log level $LOG_LEVEL, verify_cache_entries $VERIFY_CACHE_ENTRIES, doors: API," \
  "auth_request, token (ES256). $USERS users added, then each checked once (the cache full)." \
  "Each round, at once for ${DURATION}s: adds ($CONNECTIONS connections), auth_request checks cycling over the" \
  "$USERS users ($CONNECTIONS connections), tokens for them ($((CONNECTIONS / 4)) connections). RSS sampled every 0.1 s." ""
md "| moment | RSS MB |" "|---|---|" "| after start-up, idle | $(mib "$RSS_START") |" "| $USERS users added and checked, idle | $(mib "$RSS_FULL") |"
peaks=(); idles=(); round_adds=(); round_checks=(); round_tokens=()
for run in $(seq "$RUNS"); do
  started=$(date +%s.%N)
  SCENARIO=memory-adds run_wrk add.lua "$DURATION" "http://$ADDR" >"$BENCH_DIR/adds.out" &
  LOAD_PIDS=("$!")
  USERS=$USERS SCENARIO=memory-checks run_wrk users.lua "$DURATION" "http://$AUTH_ADDR/auth" >"$BENCH_DIR/checks.out" &
  LOAD_PIDS+=("$!")
  CONNECTIONS=$((CONNECTIONS / 4)) THREADS=1 USERS=$USERS SCENARIO=memory-tokens \
    run_wrk users.lua "$DURATION" "$TOKEN_URL" >"$BENCH_DIR/tokens.out" &
  LOAD_PIDS+=("$!")
  for pid in "${LOAD_PIDS[@]}"; do wait "$pid"; done
  LOAD_PIDS=()
  peak=$(awk -v t="$started" '$1 >= t && $2 > r { r = $2 } END { print r + 0 }' "$BENCH_DIR/samples")
  sleep "$SETTLE"
  idle=$(rss_kb)
  peaks+=("$peak"); idles+=("$idle")
  a=$(cat "$BENCH_DIR/adds.out"); c=$(cat "$BENCH_DIR/checks.out"); t=$(cat "$BENCH_DIR/tokens.out")
  round_adds+=("$a"); round_checks+=("$c"); round_tokens+=("$t")
  [ "$(field non2xx "$c")$(field non2xx "$t")" = 00 ] || { echo "bench: refused checks or tokens: $c / $t" >&2; exit 1; }
  echo "   round $run: adds $(rate "$a")/s p99 $(field p99_ms "$a") ms max $(field max_ms "$a") ms;" \
    "checks $(rate "$c")/s p99 $(field p99_ms "$c") ms max $(field max_ms "$c") ms;" \
    "tokens $(rate "$t")/s p99 $(field p99_ms "$t") ms max $(field max_ms "$t") ms;" \
    "RSS peak $(mib "$peak") MB, ${SETTLE}s after $(mib "$idle") MB"
  md "| round $run: peak during load (adds $(rate "$a")/s, checks $(rate "$c")/s, tokens $(rate "$t")/s) | $(mib "$peak") |" \
    "| round $run: ${SETTLE} s after the load, idle | $(mib "$idle") |"
done
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
PEAK=$(worst "${peaks[@]}")
IDLE=$(worst "${idles[@]}" "$RSS_START")
echo
printf '%-48s %8s MB   (target at most 20 MB)\n' "RSS after start-up, idle" "$(mib "$RSS_START")"
printf '%-48s %8s MB   (rounds: %s)\n' "RSS idle after the load, largest" "$(mib "$(worst "${idles[@]}")")" "$(for k in "${idles[@]}"; do mib "$k"; echo -n ' '; done)"
printf '%-48s %8s MB   (rounds: %s; target at most 64 MB)\n' "RSS at peak under load" "$(mib "$PEAK")" "$(for k in "${peaks[@]}"; do mib "$k"; echo -n ' '; done)"
printf '%-48s %8s\n' "verifications hashed / cached" "$(verifications hashed) / $(verifications cached)"
md "" "Targets (issue 13): idle at most 20 MB: largest idle $(mib "$IDLE") MB; peak at most 64 MB: $(mib "$PEAK") MB." \
  "Verifications hashed $(verifications hashed), from the cache $(verifications cached)."
md "" "| load of each round | round | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |" "|---|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  md_run adds "$run" "${round_adds[run - 1]}"
  md_run "auth_request checks" "$run" "${round_checks[run - 1]}"
  md_run tokens "$run" "${round_tokens[run - 1]}"
done
plot_latencies
echo "   results: $RESULTS"
