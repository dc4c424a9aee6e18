-- Token bucket rate limiter as GCRA (generic cell rate algorithm): one check
-- of one client, atomically.
--
-- The bucket holds up to ARGV[1] tokens and refills one token every
-- ARGV[2] / ARGV[1] µs (the emission interval T). Instead of a token count
-- and a refill time, GCRA keeps one value per client, the theoretical arrival
-- time (TAT): when the bucket will be full again. A request at `now` is
-- accepted if max(TAT, now) + T - window <= now, and then moves TAT to
-- max(TAT, now) + T. So a fresh client may send `limit` requests at once, and
-- then one every T; any interval of length D holds at most limit + floor(D / T)
-- accepted requests (up to 2 * limit - 1 in one window). Same algorithm as
-- redis-cell, go-redis/redis_rate and Brandur Leach's `throttled`.
--
-- T is window / limit, which need not be a whole number of µs; to stay exact
-- the TAT is kept as `base:frac`, meaning base + frac / limit µs, and the
-- arithmetic below is in integers (exact below 2^53, i.e. unless
-- limit * window exceeds about 9e15 µs, e.g. one million requests per 2.5 h).
--
-- KEYS[1]  string "<base>:<frac>": TAT = base + frac / limit µs since the
--          Unix epoch, 0 <= frac < limit.
-- ARGV[1]  limit: the burst size, requests (integer >= 1).
-- ARGV[2]  window length in µs (integer >= 1); the bucket refills fully in
--          one window.
--
-- Returns {allowed, remaining, reset_after, retry_after} (decoded by
-- `LimiterReply` in rate_limit/mod.rs):
--   allowed      1 if the request was accepted (TAT advanced), else 0;
--   remaining    requests that would still be accepted right now;
--   reset_after  µs until `remaining` next increases (the next token), > 0;
--   retry_after  0 if accepted, else µs until a request would be accepted, > 0.
--
-- Time comes from the server's clock (TIME), never from the caller. A rejected
-- request is read-only. An accepted one sets the key to expire when the TAT
-- passes, since an expired TAT means the same as none (a full bucket); that
-- is at most one window. Needs effects replication (default since Redis 5,
-- the only mode in 7).

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local function int(n)
  return string.format('%d', n)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- T = step + step_frac / limit µs.
local step = math.floor(window / limit)
local step_frac = window - step * limit

local base, frac = now, 0
local stored = redis.call('GET', key)
if stored then
  local b, f = string.match(stored, '^(%d+):(%d+)$')
  b, f = tonumber(b), tonumber(f)
  -- A TAT in the past means a full bucket: start from now.
  if b and f and b >= now then
    base, frac = b, math.min(f, limit - 1)
  end
end

local new_base = base + step
local new_frac = frac + step_frac
if new_frac >= limit then
  new_base, new_frac = new_base + 1, new_frac - limit
end

-- (now - (new_tat - window)) * limit: how far, in units of 1/limit µs, the
-- request is inside the bucket's tolerance; negative means too early.
local ahead = (now - new_base + window) * limit - new_frac
if ahead < 0 then
  local retry = math.ceil(-ahead / limit)
  return {0, 0, retry, retry}
end

redis.call('SET', key, int(new_base) .. ':' .. int(new_frac),
  'PX', int(math.max(1, math.ceil((new_base + 1 - now) / 1000))))

-- Each further request needs `window` more units (T * limit) of tolerance.
local remaining = math.floor(ahead / window)
local reset = math.ceil(((remaining + 1) * window - ahead) / limit)
return {1, remaining, math.max(1, reset), 0}
