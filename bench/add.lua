-- Durable adds with unique epoch-style names: each connection numbers its own.
local result = dofile("bench/result.lua")
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
  result.report(summary, latency, errors)
end
