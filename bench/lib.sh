# shellcheck shell=bash disable=SC2034
# Shared by the benchmark scripts: building, starting and stopping the
# service, driving it with wrk, reading wrk's RESULT lines, and writing each
# script's results as Markdown ($BENCH_DIR/results.md) with a latency plot
# per scenario ($BENCH_DIR/plots/*.png, drawn by gnuplot when it is
# installed: apt-get install gnuplot-nox). Sourced, not run. Expects RUNS,
# DURATION, CONNECTIONS, THREADS and BENCH_DIR set.

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
  cargo build --quiet --bin registry-rubber --example sqlite_commit_rate --example sqlite_lookups --example mysql_commit_rate \
    --example fsync_probe
  OUT=target/debug
else
  cargo build --release --quiet --bin registry-rubber --example sqlite_commit_rate --example sqlite_lookups --example mysql_commit_rate \
    --example fsync_probe
  OUT=target/release
fi
# A build leaves hundreds of megabytes of dirty pages, which the kernel
# would write back during the first run and stall its fsyncs: out now.
sync
# BENCH_BIN measures another build of the service (an older commit, say) with
# this build's tools and scripts, for a comparison in the same session.
BIN=${BENCH_BIN:-$OUT/registry-rubber}
RAW=$OUT/examples/sqlite_commit_rate
LOOKUPS=$OUT/examples/sqlite_lookups
MYSQL_RAW=$OUT/examples/mysql_commit_rate
FSYNC_PROBE=$OUT/examples/fsync_probe

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

# run_wrk SCRIPT SECONDS URL [wrk options...]: prints the RESULT line. With
# SCENARIO set (a file name: adds, door-sha1, ...), the run's latency
# distribution is kept as $BENCH_DIR/plots/SCENARIO.N.dat, N counting the
# runs of that scenario, for plot_latencies.
run_wrk() {
  local script=$1 seconds=$2 url=$3
  shift 3
  LATENCY_FILE=$(latency_file) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 10s -s "bench/$script" "$@" "$url" |
    grep '^RESULT'
}

# latency_file: where the next run of SCENARIO keeps its distribution
# (nothing without SCENARIO).
latency_file() {
  [ -n "${SCENARIO:-}" ] || return 0
  mkdir -p "$BENCH_DIR/plots"
  local n=1
  while [ -e "$BENCH_DIR/plots/$SCENARIO.$n.dat" ]; do n=$((n + 1)); done
  echo "$BENCH_DIR/plots/$SCENARIO.$n.dat"
}

# CPU time of process PID so far, user and system, in clock ticks.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The machine's CPU ticks so far: "busy total" over every core.
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
# Milliseconds of CPU per thousand of N operations, from two tick counts.
ms_per_k() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {if (n > 0) printf "%.0f", (b - a) * 1000 / hz * 1000 / n; else print "-"}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
m() { printf '%s\n' "$@" | median; }
rate() { awk -v r="$(field requests "$1")" -v s="$(field seconds "$1")" 'BEGIN {printf "%.0f", r/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f", a/b; else print "inf"}'; }
worst() { printf '%s\n' "$@" | sort -g | tail -1; }

# The Markdown results of one script: md_start TITLE empties
# $BENCH_DIR/results.md and the plots, and heads the file with the machine;
# md LINE... appends lines; md_run SCENARIO RUN RESULT appends one row of
# the per-run table (md_runs_header starts one).
md_start() {
  RESULTS=$BENCH_DIR/results.md
  rm -rf "$BENCH_DIR/plots"
  mkdir -p "$BENCH_DIR/plots"
  {
    echo "# $1"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), build $OUT;" \
      "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start (the machine may run other work);" \
      "wrk $THREADS threads, $CONNECTIONS connections."
    echo
  } >"$RESULTS"
}
md() { printf '%s\n' "$@" >>"$RESULTS"; }
md_runs_header() {
  md "| scenario | run | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |" "|---|---|---|---|---|---|---|---|"
}
md_run() {
  md "| $1 | $2 | $(rate "$3") | $(field p50_ms "$3") | $(field p99_ms "$3") | $(field p999_ms "$3") | $(field max_ms "$3") | $(field errors "$3") |"
}

# plot_latencies: one PNG per scenario kept by run_wrk, every run a line:
# latency (ms, log scale) against the percentile (on the scale of
# 1 / (1 - p), so that 90, 99, 99.9 and 99.99 are evenly spaced); the
# longest request of each run is in its key. Listed in results.md.
plot_latencies() {
  local scenarios s files f title plot
  scenarios=$(find "$BENCH_DIR/plots" -name '*.dat' -printf '%f\n' 2>/dev/null | sed 's/\.[0-9]*\.dat$//' | sort -u)
  [ -n "$scenarios" ] || return 0
  if ! command -v gnuplot >/dev/null; then
    echo "bench: gnuplot is missing, no plots drawn (apt-get install gnuplot-nox); distributions in $BENCH_DIR/plots" >&2
    md "" "Latency distributions (no plots: gnuplot is not installed) in \`plots/*.dat\`."
    return 0
  fi
  md "" "## Latency distributions" ""
  for s in $scenarios; do
    files=$(find "$BENCH_DIR/plots" -name "$s.*.dat" | sort -V)
    plot=
    for f in $files; do
      # A run that completed no request has nothing to draw.
      awk '$1 == "max" && $2 > 0 {found = 1} END {exit !found}' "$f" || continue
      title="run $(basename "$f" .dat | sed 's/.*\.//'), max $(awk '$1 == "max" {print $2}' "$f") ms"
      plot="$plot${plot:+, }'$f' using (1/(1-\$1/100)):2 with linespoints pointsize 0.5 title '$title'"
    done
    [ -n "$plot" ] || continue
    gnuplot <<GNUPLOT || { echo "bench: gnuplot failed for $s" >&2; continue; }
set terminal png size 900,540 font ",11"
set output '$BENCH_DIR/plots/$s.png'
set title "$s: latency by percentile (wrk, $CONNECTIONS connections)"
set logscale x
set logscale y
set xlabel 'percentile'
set ylabel 'latency (ms)'
set xtics ('0' 1, '50' 2, '90' 10, '99' 100, '99.9' 1000, '99.99' 10000, '99.999' 100000)
set xrange [1:100000]
set grid xtics ytics mytics
set key top left
set datafile commentschars '#m'
plot $plot
GNUPLOT
    md "![$s](plots/$s.png)"
  done
}
