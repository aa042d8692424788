-- wrk script: POST $WRK_BODY with the headers in $WRK_HEADERS ("Name: value" lines), and print
-- the run's summary as one JSON line that loadtests/gateway/httpload.py parses.
--
-- No request()/response() functions: with only wrk.method/body/headers set, wrk builds the
-- request once and stays on its fast path, so the generator costs as little CPU as it can.
-- Non-2xx answers are counted by wrk itself (summary.errors.status).
--
--   WRK_BODY='{"instances": [[0, 1, ...]]}' WRK_HEADERS='Authorization: Bearer mdk_...' \
--     wrk -t1 -c16 -d10s -s loadtests/gateway/wrk_post.lua 'http://127.0.0.1:8000/v1/models/digits-sklearn:predict'

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or ""
wrk.headers["Content-Type"] = "application/json"
for line in (os.getenv("WRK_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end

-- Percentiles at which the latency distribution is printed too ("quantiles_us", [percent, us]
-- pairs), finer in the tail, so that runs can be merged into one distribution.
local GRID = {}
for p = 1, 99 do GRID[#GRID + 1] = p end
for p = 99.1, 99.95, 0.1 do GRID[#GRID + 1] = p end
GRID[#GRID + 1] = 100

function done(summary, latency, requests)
  local e = summary.errors
  local quantiles = {}
  for _, p in ipairs(GRID) do
    quantiles[#quantiles + 1] = string.format("[%g, %.1f]", p, latency:percentile(p))
  end
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, '
      .. '"mean_us": %.1f, "max_us": %.1f, "connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d, "quantiles_us": [%s]}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(quantiles, ", ")
  ))
end
