#!/usr/bin/env bash
# Where the tail of adds comes from: adds flat out (wrk, 32 connections,
# hash_type sha1) with the service logging every request with its duration
# (registry_rubber::access at info) and every WAL checkpoint of the SQLite
# writer with its duration (registry_rubber::store at debug), while the CPU
# time taken by everything else on the machine (other processes, and the
# hypervisor's steal) is sampled every 50 ms, and a probe on the same disk
# (examples/fsync_probe) times a 4 KiB write and its fdatasync every 10 ms.
#
#   bench/trace.sh                      # 3 runs of 10 s
#   RUNS=1 DURATION=5 SLOW=5 bench/trace.sh
#
# For every run it prints wrk's p50, p99, p99.9 and max; the longest add
# the service itself measured (from the request's head to its answer); the
# adds slower than SLOW ms in the service, and of those how many overlapped
# a checkpoint (in time: the add's span and the checkpoint's span share a
# moment), how many overlapped a write of the probe slower than SLOW ms (a
# stall of the disk, not of the service), and how many overlapped a 50 ms
# sample in which processes other than the service and wrk, or the
# hypervisor, took a quarter of the CPU or more; and the checkpoints' count, p50, p99, longest and total time. An add
# slow in wrk's figures but not in the service's waited outside the
# service: in the kernel's queues or for a CPU.
#
# Environment: RUNS (3), DURATION (10), CONNECTIONS (32), THREADS (2),
# SLOW (10, ms), BIG (50, ms: adds counted apart, with how many of them
# overlapped a probe write over SLOW ms or a checkpoint), WAL_LIMIT (64), BENCH_DIR (target/bench/trace). Writes
# $BENCH_DIR/results.md and a latency plot. Needs gawk.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
SLOW=${SLOW:-10}
BIG=${BIG:-50}
WAL_LIMIT=${WAL_LIMIT:-64}
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-target/bench}/trace" && cd "${BENCH_DIR:-target/bench}/trace" && pwd)
SAMPLER_PID=
wrk_pid=

command -v gawk >/dev/null || { echo "bench: gawk is missing (apt-get install gawk)" >&2; exit 1; }
source bench/lib.sh
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  [ -z "$wrk_pid" ] || kill "$wrk_pid" 2>/dev/null || true
  [ -z "$probe_pid" ] || kill "$probe_pid" 2>/dev/null || true
  [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
  stop_service
}
trap cleanup EXIT

DB=$BENCH_DIR/users.sqlite
CORES=$(nproc)
export RUBBER_DATABASE_URL="sqlite://$DB" RUBBER_HASH_TYPE=sha1 RUBBER_WAL_LIMIT=$WAL_LIMIT
export RUBBER_LOG_LEVEL=warn,registry_rubber::startup=info,registry_rubber::access=info,registry_rubber::store=debug

# One line every 50 ms, without a fork but sleep's: epoch seconds, the
# machine's busy jiffies (user, nice, system, irq, softirq) and stolen ones
# (by the hypervisor), then the jiffies of the service and of wrk.
sample() {
  local wrk_pid=$1 cpu f g
  while :; do
    read -r -a cpu </proc/stat
    read -r -a f <"/proc/$SERVICE_PID/stat" 2>/dev/null || f=()
    read -r -a g <"/proc/$wrk_pid/stat" 2>/dev/null || g=()
    echo "$EPOCHREALTIME $((cpu[1] + cpu[2] + cpu[3] + cpu[6] + cpu[7])) ${cpu[8]} $((${f[13]:-0} + ${f[14]:-0})) $((${g[13]:-0} + ${g[14]:-0}))"
    sleep 0.05
  done
}

# analyse LOG SAMPLES PROBE: one TRACE line of figures. An add is "with other
# work" when, in a sample interval overlapping it, processes other than the
# service and wrk (or the hypervisor, by stealing) took at least a quarter
# of the machine's CPU time.
analyse() {
  gawk -v slow="$SLOW" -v big="$BIG" -v cores="$CORES" -v hz="$(getconf CLK_TCK)" '
    function tod(line,   t) {
      match(line, /"timestamp":"[^"]*"/); t = substr(line, RSTART + 24, 15)
      split(t, hms, ":"); return hms[1] * 3600 + hms[2] * 60 + hms[3]
    }
    function num(line, key,   v) {
      if (!match(line, "\"" key "\":[0-9.]+")) return -1
      v = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3); return v + 0
    }
    ARGIND == 2 {
      pn++; if ($2 > pmax) pmax = $2
      if ($2 > slow) { ps_[++np] = $1 % 86400; pe_[np] = ps_[np] + $2 / 1000 }
      next
    }
    ARGIND == 1 {
      t = $1 % 86400
      if (ns) {
        cap = (t - st[ns]) * hz * cores
        other = (($2 - pb) + ($3 - ps) - ($4 - pf) - ($5 - pg)) / (cap > 0 ? cap : 1)
        so[ns] = other; sum_other += other * (t - st[ns]); span += t - st[ns]
        if (other >= 0.25) busy_span += t - st[ns]
      }
      st[++ns] = t; pb = $2; ps = $3; pf = $4; pg = $5; next
    }
    /"message":"checkpoint"/ { ms = num($0, "ms"); ce[++nc] = tod($0); cs[nc] = ce[nc] - ms / 1000; cms[nc] = ms; total += ms; next }
    /"message":"request"/ && /"path":"\/add"/ {
      d = num($0, "duration_us") / 1000; n++; if (d > max) max = d
      if (d <= slow) next
      e = tod($0); s = e - d / 1000; nslow++
      for (i = 1; i <= nc; i++) if (cs[i] < e && ce[i] > s) { withcp++; break }
      for (k = 1; k <= np; k++) if (ps_[k] < e && pe_[k] > s) { withdisk++; break }
      for (j = 1; j < ns; j++) if (st[j] < e && st[j + 1] > s && so[j] >= 0.25) { busy++; break }
      if (i > nc && k > np && j >= ns) neither++
      if (d > big) { nbig++; if (k <= np) bigdisk++; if (i <= nc) bigcp++ }
    }
    END {
      asort(cms)
      printf "TRACE adds=%d service_max_ms=%.1f slow=%d with_checkpoint=%d with_disk_stall=%d with_other_work=%d neither=%d checkpoints=%d cp_p50_ms=%.1f cp_p99_ms=%.1f cp_max_ms=%.1f cp_total_ms=%.0f other_cpu_pct=%.0f busy_time_pct=%.0f probe_writes=%d probe_slow=%d probe_max_ms=%.1f big=%d big_with_disk_stall=%d big_with_checkpoint=%d\n",
        n, max, nslow, withcp, withdisk, busy, neither, nc, nc ? cms[int((nc + 1) / 2)] : 0, nc ? cms[int(nc * 0.99 + 0.999)] : 0, nc ? cms[nc] : 0, total, span ? 100 * sum_other / span : 0, span ? 100 * busy_span / span : 0, pn, np, pmax, nbig, bigdisk, bigcp
    }' "$2" "$3" "$1"
}

md_start "Tracing the tail of adds: checkpoints and the machine's load"
md "Service: SQLite, hash_type sha1, wal_limit $WAL_LIMIT MB, access log at info and the store at debug (JSON);" \
  "the CPU time of other processes and steal sampled every 50 ms; an add is slow above $SLOW ms as the service measured it; $RUNS runs of ${DURATION}s." ""
md "| run | adds/s | p50 ms | p99 ms | p99.9 ms | max ms (wrk) | max ms (service) | slow adds | with a checkpoint | with a disk stall (probe write > $SLOW ms) | with other work (>= 25% of the CPU) | neither | checkpoints | checkpoint p50 / p99 / max ms | time in checkpoints | CPU of other work (time with >= 25%) | probe writes over $SLOW ms, longest | adds over $BIG ms: with a disk stall / with a checkpoint |" \
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "== tracing the tail of adds: $RUNS runs x ${DURATION}s, $CONNECTIONS connections; slow: above $SLOW ms in the service"
echo "   machine: $CORES cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$RUNS"); do
  rm -f "$DB"*
  "$BIN" migrate >/dev/null
  start_service
  LATENCY_FILE=$(SCENARIO=adds-traced latency_file) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s \
    -s bench/add.lua "http://$ADDR" >"$BENCH_DIR/wrk.out" &
  wrk_pid=$!
  sample "$wrk_pid" >"$BENCH_DIR/samples" &
  SAMPLER_PID=$!
  "$FSYNC_PROBE" "$BENCH_DIR/probe" "$DURATION" >"$BENCH_DIR/probe.out" &
  probe_pid=$!
  wait "$wrk_pid"
  wait "$probe_pid"
  kill "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=
  r=$(grep '^RESULT' "$BENCH_DIR/wrk.out")
  stop_service
  cp "$BENCH_DIR/service.log" "$BENCH_DIR/service.$run.log"
  a=$(analyse "$BENCH_DIR/service.log" "$BENCH_DIR/samples" "$BENCH_DIR/probe.out")
  share=$(awk -v t="$(field cp_total_ms "$a")" -v d="$(field seconds "$r")" 'BEGIN { printf "%.1f%%", t / d / 10 }')
  echo "   run $run: $(rate "$r") adds/s p50 $(field p50_ms "$r") ms p99 $(field p99_ms "$r") ms p99.9 $(field p999_ms "$r") ms max $(field max_ms "$r") ms (service: $(field service_max_ms "$a") ms);" \
    "$(field slow "$a") adds over $SLOW ms in the service: $(field with_checkpoint "$a") during a checkpoint, $(field with_disk_stall "$a") during a probe write over $SLOW ms, $(field with_other_work "$a") with other work taking a quarter of the CPU or more, $(field neither "$a") neither;" \
    "$(field checkpoints "$a") checkpoints, p50 $(field cp_p50_ms "$a") ms p99 $(field cp_p99_ms "$a") ms max $(field cp_max_ms "$a") ms, $share of the time;" \
    "other processes and steal took $(field other_cpu_pct "$a")% of the CPU, a quarter or more in $(field busy_time_pct "$a")% of the time;" \
    "probe: $(field probe_slow "$a") of $(field probe_writes "$a") writes over $SLOW ms, longest $(field probe_max_ms "$a") ms;" \
    "$(field big "$a") adds over $BIG ms in the service: $(field big_with_disk_stall "$a") during a probe write over $SLOW ms, $(field big_with_checkpoint "$a") during a checkpoint"
  md "| $run | $(rate "$r") | $(field p50_ms "$r") | $(field p99_ms "$r") | $(field p999_ms "$r") | $(field max_ms "$r") | $(field service_max_ms "$a") | $(field slow "$a") of $(field adds "$a") | $(field with_checkpoint "$a") | $(field with_disk_stall "$a") | $(field with_other_work "$a") | $(field neither "$a") | $(field checkpoints "$a") | $(field cp_p50_ms "$a") / $(field cp_p99_ms "$a") / $(field cp_max_ms "$a") | $share | $(field other_cpu_pct "$a")% ($(field busy_time_pct "$a")%) | $(field probe_slow "$a") of $(field probe_writes "$a"), $(field probe_max_ms "$a") ms | $(field big "$a"): $(field big_with_disk_stall "$a") / $(field big_with_checkpoint "$a") |"
done
plot_latencies
echo "   results: $RESULTS"
