-- Sliding window counter rate limiter: one check of one client, atomically.
--
-- Time is cut into fixed windows of ARGV[2] µs aligned to the Unix epoch. The
-- number of requests in the rolling window ending now is estimated as
--     previous * (window - elapsed) / window + current
-- (the previous fixed window's count weighted by how much of it the rolling
-- window still overlaps, plus the current fixed window's count), and a request
-- is accepted while estimate + 1 <= limit. O(1) memory per client.
--
-- The estimate assumes the previous window's requests were spread evenly. When
-- they were not, it errs: it over-admits when they came late in that window
-- (worst case 2 * limit - 1 accepted within one rolling window: `limit` just
-- before a boundary, then up to `limit - 1` more just before the next one) and
-- under-admits when they came early. No fixed window ever accepts more than
-- `limit`.
--
-- To stay exact in floating point the comparison is scaled by the window:
--     slack = limit * window - previous * (window - elapsed) - current * window
-- and a request fits while slack >= window. All values are integers below
-- 2^53 unless limit * window exceeds about 9e15 (e.g. one million requests
-- per 2.5 hours), where the estimate may be off by a few µs of weight.
--
-- KEYS[1]  hash {w = index of the current fixed window (floor(now / window)),
--                c = requests accepted in it, p = accepted in the one before}.
-- ARGV[1]  limit: requests allowed per window (integer >= 1).
-- ARGV[2]  window length in µs (integer >= 1).
--
-- Returns {allowed, remaining, reset_after, retry_after} (decoded by
-- `LimiterReply` in rate_limit/mod.rs):
--   allowed      1 if the request was accepted (and counted), else 0;
--   remaining    requests that would still be accepted right now;
--   reset_after  µs until `remaining` next increases, > 0;
--   retry_after  0 if accepted, else µs until a request would be accepted, > 0.
--
-- Time comes from the server's clock (TIME), never from the caller. A rejected
-- request is read-only. An accepted one sets the key to expire at the end of
-- the next fixed window, after which its counts no longer matter (at most two
-- windows). Needs effects replication (default since Redis 5, only mode in 7).

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local function int(n)
  return string.format('%d', n)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local index = math.floor(now / window)
local elapsed = now - index * window
local until_roll = window - elapsed

local state = redis.call('HMGET', key, 'w', 'c', 'p')
local stored_index = tonumber(state[1])
local current = tonumber(state[2]) or 0
local previous = tonumber(state[3]) or 0
if stored_index == index - 1 then
  previous, current = current, 0
elseif stored_index ~= index then
  previous, current = 0, 0
end

local function slack(c)
  return limit * window - previous * until_roll - c * window
end

local allowed = slack(current) >= window
if allowed then
  current = current + 1
  redis.call('HSET', key, 'w', int(index), 'c', int(current), 'p', int(previous))
  redis.call('PEXPIRE', key, int(math.ceil(((index + 2) * window - now) / 1000)))
end

local x = slack(current)
local remaining = 0
if x > 0 then
  remaining = math.floor(x / window)
end

-- slack grows by `previous` per µs until the fixed window rolls over (the
-- previous window's weight shrinks); after the roll the current count becomes
-- the previous one and slack grows by `current` per µs. It is continuous at
-- the roll and reaches limit * window when both windows have passed.
local target = (remaining + 1) * window
local wait
if previous > 0 and x + previous * until_roll >= target then
  wait = math.ceil((target - x) / previous)
elseif current > 0 then
  local at_roll = limit * window - current * window
  wait = until_roll + math.ceil((target - at_roll) / current)
else
  wait = until_roll
end
wait = math.max(1, math.min(wait, until_roll + window))

if allowed then
  return {1, remaining, wait, 0}
end
return {0, 0, wait, wait}
