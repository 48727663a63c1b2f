-- Error answers: an invalid user name is refused before any database work.
wrk.method = "GET"
wrk.path = "/add?user=not:valid&passwd=bench-Passw0rd"

function done(summary, latency, requests)
  local transport = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  -- Every answer is a 400 here, which wrk counts under errors.status.
  local wrong = summary.requests - summary.errors.status
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, transport + wrong))
end
