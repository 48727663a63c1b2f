-- Shared by the wrk scripts (loaded with dofile from the repository's root):
-- the RESULT line the bench scripts read, and, when LATENCY_FILE is set, the
-- latency distribution of the run for the plots: one line per percentile,
-- "percentile latency_ms", from 0 to 99.999 in steps that are even on the
-- scale of 1 / (1 - p), then the longest request as "max latency_ms".
local result = {}

function result.report(summary, latency, errors, extra)
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f errors=%d%s\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000, errors, extra or ""))
  local path = os.getenv("LATENCY_FILE")
  if path and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write("# percentile latency_ms\n")
    for i = 0, 100 do
      local p = 100 * (1 - 10 ^ (-i / 20))
      f:write(string.format("%.6f %.3f\n", p, latency:percentile(p) / 1000))
    end
    f:write(string.format("max %.3f\n", latency.max / 1000))
    f:close()
  end
end

return result
