-- Error answers: an invalid user name is refused before any database work.
local result = dofile("bench/result.lua")
wrk.method = "GET"
wrk.path = "/add?user=not:valid&passwd=bench-Passw0rd"

function done(summary, latency, requests)
  local transport = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  -- Every answer is a 400 here, which wrk counts under errors.status.
  local wrong = summary.requests - summary.errors.status
  result.report(summary, latency, transport + wrong)
end
