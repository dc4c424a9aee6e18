-- Sliding log rate limiter: one check of one client, atomically.
--
-- Exact: at most ARGV[1] requests are accepted in ANY rolling window of
-- ARGV[2] microseconds, because every accepted request is remembered until it
-- has left the window. Memory is O(limit) per client: the log never holds
-- more than `limit` entries after an accepted request.
--
-- KEYS[1]  sorted set of accepted requests; member = score = the request's
--          time in µs since the Unix epoch (strictly increasing per key, so
--          members are unique even when two requests share a microsecond).
-- ARGV[1]  limit: requests allowed per window (integer >= 1).
-- ARGV[2]  window length in µs (integer >= 1).
--
-- Returns {allowed, remaining, reset_after, retry_after} (decoded by
-- `LimiterReply` in rate_limit/mod.rs):
--   allowed      1 if the request was accepted (and recorded), else 0;
--   remaining    requests that would still be accepted right now;
--   reset_after  µs until `remaining` next increases (the oldest entry in the
--                window leaves it), > 0;
--   retry_after  0 if accepted, else µs until a request would be accepted, > 0.
--
-- Time comes from the server's clock (TIME), never from the caller, so every
-- instance of every function agrees on it. A rejected request is read-only: it
-- stores nothing, consumes nothing and does not move the key's expiry. An
-- accepted request sets the key to expire when its newest entry leaves the
-- window. Needs effects replication (the default since Redis 5, the only mode
-- in 7): the script writes after reading TIME.

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local function int(n)
  -- tostring() would print µs timestamps in exponent form.
  return string.format('%.0f', n)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- An entry is in the window while now - entry < window.
local horizon = now - window

local count = redis.call('ZCOUNT', key, '(' .. int(horizon), '+inf')
if count >= limit then
  -- The count drops below the limit when the (count - limit)-th oldest entry
  -- in the window (0-based) leaves it; count > limit only after the limit was
  -- lowered by a new configuration.
  local entry = redis.call('ZRANGEBYSCORE', key, '(' .. int(horizon), '+inf',
    'WITHSCORES', 'LIMIT', count - limit, 1)
  local retry = tonumber(entry[2]) + window - now
  return {0, 0, retry, retry}
end

redis.call('ZREMRANGEBYSCORE', key, '-inf', int(horizon))
-- Keep scores strictly increasing so members stay unique, also if the server
-- clock stepped back (failover to a replica whose clock is behind).
local score = now
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= score then
  score = tonumber(newest[2]) + 1
end
redis.call('ZADD', key, int(score), int(score))
redis.call('PEXPIRE', key, int(math.ceil((score + window - now) / 1000)))

local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {1, limit - count - 1, tonumber(oldest[2]) + window - now, 0}
