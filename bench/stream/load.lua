-- wrk script for bench/stream: bench/overhead/load.lua (its path in OVERHEAD_LOAD_LUA) with the
-- request headers of WRK_HEADERS ("name: value" lines) added, for Portkey's routing headers.
dofile(os.getenv("OVERHEAD_LOAD_LUA"))

local extra = {}
for name, value in string.gmatch(os.getenv("WRK_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  extra[name] = value
end

local format = wrk.format
wrk.format = function(method, path, headers, body)
  headers = headers or {}
  for name, value in pairs(extra) do headers[name] = value end
  return format(method, path, headers, body)
end
