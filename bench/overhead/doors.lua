-- wrk script for bench/overhead/doors.py: POST a ~200-byte request in one front door's wire
-- format, unique per request (a counter in the text, so no exact cache can answer it), and
-- print a machine-readable summary line at the end (as load.lua does).
--
-- usage: wrk ... URL -- DOOR(chat|messages|responses|completions|embeddings) MODEL STREAM(0|1)

local QUESTION = "Why does caching make repeated questions cheaper and faster for an "
  .. "application that calls a large language model many times a day? Answer briefly."

local counter = 0
local headers, prefix, suffix

local function stream_field(door, stream)
  if not stream then return "" end
  if door == "chat" or door == "completions" then
    return ',"stream":true,"stream_options":{"include_usage":true}'
  end
  return ',"stream":true'
end

function init(args)
  local door, model, stream = args[1], args[2], args[3] == "1"
  headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
  local m = '{"model":"' .. model .. '",'
  if door == "chat" then
    prefix = m .. '"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"'
    suffix = '"}],"max_tokens":64'
  elseif door == "messages" then
    headers["anthropic-version"] = "2023-06-01"
    prefix = m .. '"system":"Be brief.","messages":[{"role":"user","content":"'
    suffix = '"}],"max_tokens":64'
  elseif door == "responses" then
    prefix = m .. '"instructions":"Be brief.","input":"'
    suffix = '","max_output_tokens":64'
  elseif door == "completions" then
    prefix = m .. '"prompt":"Be brief. '
    suffix = '","max_tokens":64'
  elseif door == "embeddings" then
    prefix = m .. '"input":"'
    suffix = '","encoding_format":"float"'
  else
    error("unknown door " .. tostring(door))
  end
  suffix = QUESTION .. suffix .. stream_field(door, stream) .. "}"
end

function request()
  counter = counter + 1
  local body = prefix .. string.format("[r%09d] ", counter) .. suffix
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,'
      .. '"p50":%d,"p90":%d,"p99":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
