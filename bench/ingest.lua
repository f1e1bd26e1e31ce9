-- wrk script: POST ~1 KB structured CloudEvents, each with a unique id
-- (so dedupe cannot flatter the figure). Usage:
--   wrk -t1 -c32 -d10s -s bench/ingest.lua http://127.0.0.1:8080/v1/events
local counter = 0
local thread_tag = tostring(math.random(1, 1e9))
local pad = string.rep("x", 820)

request = function()
  counter = counter + 1
  local body = '{"specversion":"1.0","id":"' .. thread_tag .. "-" .. counter ..
    '","source":"/bench/wrk","type":"com.example.bench","datacontenttype":"application/json",' ..
    '"data":{"seq":' .. counter .. ',"pad":"' .. pad .. '"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/cloudevents+json"}, body)
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("requests=%d non2xx=%d rps=%.0f p50_us=%d p99_us=%d\n",
    summary.requests, non2xx, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99)))
end
