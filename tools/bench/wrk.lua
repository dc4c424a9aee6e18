-- wrk script of `make bench`, figure 4 (end to end through `cargo lambda watch`).
--
-- Settings come from the environment, because wrk calls done() in a Lua state
-- that never saw the script's arguments:
--   WRK_LABEL        the name of the run in the results (ingest, summary_hit)
--   WRK_METHOD       GET (default) or POST
--   WRK_PATH         the path and query string to request
--   WRK_TYPE         POST only: the metric type of the body
--   WRK_CONNECTIONS  the -c given to wrk, copied into the results
--   WRK_CLIENTS      "each": every request from its own client, named by a
--                    fresh X-Forwarded-For address (10.x.y.z, from a random
--                    start), so that per-client rate limits accept them all
--                    (the server must trust one proxy hop); otherwise one
--                    client, the connection's address
--
-- A POST carries one metric timestamped at the second it is sent, as a live
-- client sends it. A GET response whose `X-Cache` header is not `HIT` is
-- counted in "not_hit", so a run of cache hits shows that it was one. At the
-- end, one JSON line of results is written to stdout:
--   {"label", "requests", "duration_us", "p50_us", "p99_us", "mean_us",
--    "non_2xx", "socket_errors", "connections", "not_hit", "warm"}
-- where "warm" says whether the run looks like one of started instances
-- (more than 100 requests, p99 under 1 s): `make bench` warms up until it is.

local method = os.getenv("WRK_METHOD") or "GET"
local path = os.getenv("WRK_PATH") or "/health"
local metric_type = os.getenv("WRK_TYPE") or "bench_e2e"
local headers = { ["Content-Type"] = "application/json" }
local get_headers = {}
local own_clients = os.getenv("WRK_CLIENTS") == "each"
local n = 0
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local first_client = math.random(0, 2 ^ 24 - 1)

-- The next client's address, when every request has its own.
local function next_client()
  local c = (first_client + n) % (2 ^ 24)
  return string.format("10.%d.%d.%d", math.floor(c / 65536), math.floor(c / 256) % 256, c % 256)
end
-- Per thread (each wrk thread has its own Lua state); read by done().
not_hit = 0
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

if method ~= "POST" then
  -- Defined only for GETs: a response callback makes wrk hand every
  -- response's headers to Lua, a cost the POST runs need not pay.
  response = function(status, headers, body)
    local x_cache = headers["x-cache"] or headers["X-Cache"]
    if x_cache ~= "HIT" then
      not_hit = not_hit + 1
    end
  end
end

request = function()
  n = n + 1
  if own_clients then
    local client = next_client()
    headers["X-Forwarded-For"] = client
    get_headers["X-Forwarded-For"] = client
  end
  if method ~= "POST" then
    return wrk.format("GET", path, get_headers)
  end
  local body = string.format('{"timestamp":"%s","value":%d.5,"type":"%s"}',
    os.date("!%Y-%m-%dT%H:%M:%SZ"), n % 100, metric_type)
  return wrk.format("POST", path, headers, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  local misses = 0
  for _, thread in ipairs(threads) do
    misses = misses + (thread:get("not_hit") or 0)
  end
  io.write(string.format(
    '{"label":"%s","requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"mean_us":%.1f,"non_2xx":%d,"socket_errors":%d,"connections":%d,"not_hit":%d,' ..
    '"warm":%s}\n',
    os.getenv("WRK_LABEL") or "run", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean, e.status,
    e.connect + e.read + e.write + e.timeout, tonumber(os.getenv("WRK_CONNECTIONS") or "0"),
    misses, tostring(summary.requests > 100 and latency:percentile(99) < 1000000)))
end
