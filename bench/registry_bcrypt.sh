#!/usr/bin/env bash
# What docker-registry's own htpasswd check costs per request at each bcrypt
# cost. The registry keeps no cache: it runs bcrypt on every request it
# authenticates, so RUBBER_BCRYPT_COST sets the CPU every registry request
# costs when the registry reads the service's htpasswd file.
#
#   bench/registry_bcrypt.sh                          # costs 4 8 10
#   COSTS="4 6 8 10 12" REQUESTS=100 bench/registry_bcrypt.sh
#
# For each cost, one curl process sends REQUESTS authenticated GET /v2/
# over one kept-alive connection to a private registry on loopback (plain
# http: TLS costs the same with or without the hash), and as many without
# credentials (a 401, no hashing) for the baseline. Prints the median time
# of one request, and its difference to the baseline: the check itself;
# and the p99 and the longest request of each cost. Writes
# $BENCH_DIR/results.md.
#
# Needs docker-registry, apache2-utils (htpasswd -B writes the same $2y$
# lines as the service) and curl. Environment: COSTS ("4 8 10"), REQUESTS
# (40), BENCH_DIR (target/bench).
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/free-port.sh
COSTS=${COSTS:-4 8 10}
REQUESTS=${REQUESTS:-40}
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}/registry-bcrypt" && cd "${BENCH_DIR:-target/bench}/registry-bcrypt" && pwd)

for program in docker-registry htpasswd curl; do
  command -v "$program" >/dev/null ||
    { echo "bench: $program is missing (apt-get install docker-registry apache2-utils curl)" >&2; exit 1; }
done

REGISTRY_PID=
stop_registry() {
  if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
    kill -TERM "$REGISTRY_PID"
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
}
trap stop_registry EXIT

port=$(free_port) || port=
[ -n "$port" ] || { echo "bench: no free port" >&2; exit 1; }

rm -rf "$BENCH_DIR/storage"
mkdir -p "$BENCH_DIR/storage"
htpasswd -nbB -C 4 bench bench-password >"$BENCH_DIR/htpasswd"
cat >"$BENCH_DIR/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $BENCH_DIR/storage
http:
  addr: 127.0.0.1:$port
  secret: bench
auth:
  htpasswd:
    realm: bench
    path: $BENCH_DIR/htpasswd
EOF
docker-registry serve "$BENCH_DIR/config.yml" >"$BENCH_DIR/registry.log" 2>&1 &
REGISTRY_PID=$!
deadline=$((SECONDS + 10))
until curl -s -o /dev/null "http://127.0.0.1:$port/v2/"; do
  if [ $SECONDS -ge $deadline ] || ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
    echo "bench: docker-registry did not start" >&2; cat "$BENCH_DIR/registry.log" >&2; exit 1
  fi
  sleep 0.05
done

for _ in $(seq 1 "$REQUESTS"); do
  printf 'url = "http://127.0.0.1:%s/v2/"\noutput = "/dev/null"\n' "$port"
done >"$BENCH_DIR/requests.cfg"

# times_ms [curl options...]: the median, p99 and longest time_total of
# REQUESTS requests, in ms.
times_ms() {
  curl -s "$@" -K "$BENCH_DIR/requests.cfg" -w '%{time_total}\n' |
    sort -g | awk '{a[NR]=$1} END {i = int(NR * 0.99 + 0.999); printf "%.2f %.2f %.2f\n", 1000 * (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), 1000 * a[i], 1000 * a[NR]}'
}

read -r baseline p99 max < <(times_ms)
RESULTS=$BENCH_DIR/results.md
{
  echo "# What docker-registry's htpasswd check costs per request, by bcrypt cost"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $REQUESTS requests per cost on one kept-alive connection."
  echo
  echo "| cost | request ms (median) | check ms | p99 ms | max ms |"
  echo "|---|---|---|---|---|"
  echo "| none | $baseline | - | $p99 | $max |"
} >"$RESULTS"
printf '%-6s %12s %12s %10s %10s\n' cost request_ms check_ms p99_ms max_ms
printf '%-6s %12s %12s %10s %10s\n' none "$baseline" "-" "$p99" "$max"
for cost in $COSTS; do
  htpasswd -nbB -C "$cost" bench bench-password >"$BENCH_DIR/htpasswd.new"
  mv "$BENCH_DIR/htpasswd.new" "$BENCH_DIR/htpasswd"
  # The first request reads the new file.
  [ "$(curl -s -o /dev/null -w '%{http_code}' -u bench:bench-password "http://127.0.0.1:$port/v2/")" = 200 ] ||
    { echo "bench: the registry refused the cost $cost entry" >&2; exit 1; }
  read -r ms p99 max < <(times_ms -u bench:bench-password)
  check=$(awk -v a="$ms" -v b="$baseline" 'BEGIN {printf "%.2f", a - b}')
  printf '%-6s %12s %12s %10s %10s\n' "$cost" "$ms" "$check" "$p99" "$max"
  echo "| $cost | $ms | $check | $p99 | $max |" >>"$RESULTS"
done
echo "   results: $RESULTS"
