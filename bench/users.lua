-- Credential checks spread over many users: each request checks the next of
-- USERS users (mem-1 .. mem-USERS, password Mem-Passw0rd-N, as bench/memory.sh
-- adds them), so that every one of them is verified and cached in turn.
-- The path comes from the URL given to wrk.
local result = dofile("bench/result.lua")
local users = tonumber(os.getenv("USERS") or "10000")
local threads = {}
local counter = 0

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 4 - (3 - (#s - i + 1 >= 3 and 3 or #s - i + 1))
    for j = 1, 4 do
      if j <= chars then
        local k = math.floor(n / 2 ^ (6 * (4 - j))) % 64
        out[#out + 1] = alphabet:sub(k + 1, k + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  -- Threads start at different users.
  counter = id * math.floor(users / 2)
end

function request()
  counter = counter + 1
  local n = counter % users + 1
  local header = "Basic " .. base64("mem-" .. n .. ":Mem-Passw0rd-" .. n)
  return wrk.format(nil, nil, { Authorization = header })
end

function done(summary, latency, requests)
  local transport = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  result.report(summary, latency, transport, string.format(" non2xx=%d", summary.errors.status))
end
