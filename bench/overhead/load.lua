-- wrk script for bench/overhead: POST a ~200-byte OpenAI chat body, unique per request
-- (a counter in the user message, so no exact cache can answer it), and print a
-- machine-readable summary line at the end.
--
-- usage: wrk ... URL -- MODEL STREAM(0|1) [BODY_BYTES] [CACHE_CONTROL]

local QUESTION = "Why does caching make repeated questions cheaper and faster for an "
  .. "application that calls a large language model many times a day? Answer in two short "
  .. "sentences, please, without any lists."

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local counter = 0
local headers, prefix, suffix

function init(args)
  local model = args[1] or "mock"
  local stream = args[2] == "1"
  local size = tonumber(args[3] or "200")
  local cache_control = args[4]
  headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
  if cache_control and cache_control ~= "" then headers["Cache-Control"] = cache_control end
  prefix = '{"model":"' .. model .. '","messages":[{"role":"system","content":"Be brief."},'
    .. '{"role":"user","content":"'
  local tail = '"}],"max_tokens":64'
  if stream then tail = tail .. ',"stream":true,"stream_options":{"include_usage":true}' end
  tail = tail .. "}"
  local tag_len = #string.format("[t%02d r%09d] ", 1, 1)
  local room = size - #prefix - tag_len - #tail
  if room < 1 then room = 1 end
  suffix = QUESTION:sub(1, room) .. tail
end

-- WRK_SAME_BODY=1 sends one body over and over (bench/cache/exact_http.py: exact-cache hits).
local same_body = os.getenv("WRK_SAME_BODY") == "1"

function request()
  if not same_body then counter = counter + 1 end
  local body = prefix .. string.format("[t%02d r%09d] ", tid or 1, counter) .. suffix
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
