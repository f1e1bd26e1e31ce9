-- wrk script: POST structured CloudEvents of a fixed size (1024 bytes by
-- default), each with a unique id, so Ferry's dedupe cannot flatter the
-- figure. Arguments after `--` (all optional):
--   batch=N   N events per request as application/cloudevents-batch+json
--             (default 1: one application/cloudevents+json event)
--   size=B    bytes per event (default 1024)
--   nonce=S   prefix of every id; give each run its own (default: time)
-- Usage:
--   wrk -t1 -c32 -d10s -s bench/ingest.lua http://127.0.0.1:8080/v1/events \
--       -- batch=100 nonce=run7
-- Prints one JSON line at the end (bench/run.py parses it).

local threads = {}
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

local batch, size, nonce = 1, 1024, nil
local counter = 0
local head, head_mid, tail, ctype, reqhead

function init(args)
  for _, a in ipairs(args) do
    local k, v = a:match("^(%w+)=(.*)$")
    if k == "batch" then batch = tonumber(v)
    elseif k == "size" then size = tonumber(v)
    elseif k == "nonce" then nonce = v
    else error("ingest.lua: unknown argument " .. a) end
  end
  nonce = nonce or tostring(os.time())
  -- every event has the same length: ids and seq are fixed width
  local prefix = string.format("%s-%02d-", nonce, tid or 0)
  head = '{"specversion":"1.0","id":"' .. prefix
  local mid = '","source":"/bench/wrk","type":"com.example.bench",' ..
    '"datacontenttype":"application/json","data":{"seq":"'
  local probe = head .. string.format("%012d", 0) .. mid ..
    string.format("%012d", 0) .. '","pad":"' .. '"}}'
  local pad = string.rep("x", math.max(0, size - #probe))
  tail = '","pad":"' .. pad .. '"}}'
  head_mid = mid
  ctype = batch > 1 and "application/cloudevents-batch+json"
    or "application/cloudevents+json"
  -- every body has the same length, so the request head is built once
  local len = #event() * batch + (batch > 1 and batch + 1 or 0)
  counter = 0
  local req = wrk.format("POST", nil, {["Content-Type"] = ctype},
    string.rep("x", len))
  reqhead = req:sub(1, #req - len)
end

function event()
  counter = counter + 1
  local n = string.format("%012d", counter)
  return head .. n .. head_mid .. n .. tail
end

request = function()
  local body
  if batch > 1 then
    local evs = {}
    for i = 1, batch do evs[i] = event() end
    body = "[" .. table.concat(evs, ",") .. "]"
  else
    body = event()
  end
  return reqhead .. body
end

done = function(summary, latency, requests)
  local e = summary.errors
  local good = summary.requests - e.status
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"duration_s":%.3f,"rps":%.1f,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout, secs,
    good / secs, latency:percentile(50), latency:percentile(99), latency.max))
end
