-- Durable adds with unique epoch-style names: each connection numbers its own.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
  math.randomseed(os.time() + id)
  prefix = tostring(os.time()) .. "-" .. id .. "-" .. math.random(1, 1000000000) .. "-"
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/add?user=" .. prefix .. counter .. "&passwd=bench-Passw0rd")
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end
