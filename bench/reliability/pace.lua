-- wrk script for bench/reliability's soak: a unique ~200-byte chat body per request, sent at a
-- fixed rate (wrk2-style constant throughput) when WRK_RATE is set.
--
-- Pacing (NOTE): each thread owns a schedule of send slots, t0 + k / rate_per_thread; every
-- connection that is ready to send asks delay() for the next slot and waits until it (wrk's
-- timer has 1 ms resolution, so a request may leave up to 1 ms early, never more, and the
-- average rate is exact). A connection that is late sends at once, so a gateway that stalls
-- meets the backlog afterwards, as with real clients, instead of being offered less load.
-- `behind_ms` is the latest a request left after its slot: a large value means the
-- connections were all busy and the load was not held. With WRK_STOP_MS, no request leaves
-- after that many ms: wrk aborts what is in flight when its -d ends, so a quiet tail lets every
-- request sent finish and be counted (`sent` == `requests`).
--
-- usage: WRK_RATE=N WRK_STOP_MS=M WRK_RUN=ID wrk ... URL -- AUTH_KEY TAG

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } rel_timespec;
  int clock_gettime(int clk, rel_timespec *ts);
]]
local ts = ffi.new("rel_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local QUESTION = "Why does caching make repeated questions cheaper and faster for an "
  .. "application that calls a large language model many times a day? Answer briefly."

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

sent = 0
behind_ms = 0
local headers, prefix, suffix
local run = os.getenv("WRK_RUN") or "0"
local rate = tonumber(os.getenv("WRK_RATE") or "0")
local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
local stop_ms = tonumber(os.getenv("WRK_STOP_MS") or "0")

function init(args)
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. args[1],
    ["x-gateway-tags"] = args[2],
  }
  prefix = '{"model":"mock","messages":[{"role":"system","content":"Be brief."},'
    .. '{"role":"user","content":"'
  suffix = QUESTION .. '"}],"max_tokens":64}'
end

function request()
  sent = sent + 1
  local body = prefix .. string.format("[%s t%02d r%09d] ", run, tid or 1, sent) .. suffix
  return wrk.format("POST", nil, headers, body)
end

if rate > 0 then
  local interval = 1000 / (rate / nthreads)
  local t0, k = nil, 0
  function delay()
    local now = now_ms()
    if t0 == nil then t0 = now end
    if stop_ms > 0 and now - t0 >= stop_ms then return 3600000 end
    local slot = t0 + k * interval
    k = k + 1
    local d = slot - now
    if d <= 0 then
      if -d > behind_ms then behind_ms = -d end
      return 0
    end
    return math.floor(d)
  end
end

function done(summary, latency, requests)
  local total_sent, behind = 0, 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    behind = math.max(behind, t:get("behind_ms"))
  end
  -- wrk calls request() once more than it sends, on the first thread before the run, to
  -- check the request (script_verify_request): that one never leaves.
  total_sent = total_sent - 1
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"sent":%d,"requests":%d,"duration_us":%d,"behind_ms":%.1f,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    total_sent, summary.requests, summary.duration, behind,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
