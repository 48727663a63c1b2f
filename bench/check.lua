-- Credential checks: the same request over and over (the Authorization
-- header comes from wrk's -H). Reports answers outside 2xx/3xx apart from
-- transport errors, so that a caller expecting 404 can tell them apart.
local result = dofile("bench/result.lua")

function done(summary, latency, requests)
  local transport = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  result.report(summary, latency, transport, string.format(" non2xx=%d", summary.errors.status))
end
