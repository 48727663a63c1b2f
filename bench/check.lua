-- Credential checks: the same request over and over (the Authorization
-- header comes from wrk's -H). Reports answers outside 2xx/3xx apart from
-- transport errors, so that a caller expecting 404 can tell them apart.
function done(summary, latency, requests)
  local transport = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    transport, summary.errors.status))
end
