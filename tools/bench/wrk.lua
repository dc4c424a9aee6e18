-- wrk script of `make bench`, figure 4 (end to end through `cargo lambda watch`).
--
-- Settings come from the environment, because wrk calls done() in a Lua state
-- that never saw the script's arguments:
--   WRK_LABEL        the name of the run in the results (ingest, summary_hit)
--   WRK_METHOD       GET (default) or POST
--   WRK_PATH         the path and query string to request
--   WRK_TYPE         POST only: the metric type of the body
--   WRK_CONNECTIONS  the -c given to wrk, copied into the results
--
-- A POST carries one metric timestamped at the second it is sent, as a live
-- client sends it. At the end, one JSON line of results is written to stdout:
--   {"label", "requests", "duration_us", "p50_us", "p99_us", "mean_us",
--    "non_2xx", "socket_errors", "connections"}

local method = os.getenv("WRK_METHOD") or "GET"
local path = os.getenv("WRK_PATH") or "/health"
local metric_type = os.getenv("WRK_TYPE") or "bench_e2e"
local headers = { ["Content-Type"] = "application/json" }
local n = 0

request = function()
  if method ~= "POST" then
    return wrk.format("GET", path)
  end
  n = n + 1
  local body = string.format('{"timestamp":"%s","value":%d.5,"type":"%s"}',
    os.date("!%Y-%m-%dT%H:%M:%SZ"), n % 100, metric_type)
  return wrk.format("POST", path, headers, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"label":"%s","requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"mean_us":%.1f,"non_2xx":%d,"socket_errors":%d,"connections":%d}\n',
    os.getenv("WRK_LABEL") or "run", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean, e.status,
    e.connect + e.read + e.write + e.timeout, tonumber(os.getenv("WRK_CONNECTIONS") or "0")))
end
