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
-- ARGV[3]  the window in ms, rounded up (ceil(ARGV[2] / 1000)): the expiry of
--          a log whose only entry is the new one.
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
--
-- Commands per call, besides TIME: a client with no log (the key expired with
-- its newest entry) costs ZCARD, ZADD and PEXPIRE; one with entries adds
-- ZREMRANGEBYSCORE and one or two single-entry ZRANGEs; a refusal costs
-- ZCARD and one single-entry ZRANGE, since the log is sorted and its newest
-- `count` entries are the window's. No float is formatted or parsed beyond
-- the scores themselves: TIME's two strings are the member.

local key = KEYS[1]

local t = redis.call('TIME')
-- The request's time in µs as the member and score it is stored under:
-- the seconds, then the microseconds padded to six digits.
local us = t[2]
if #us < 6 then us = string.sub('00000' .. us, -6) end
local member = t[1] .. us

-- Entries in the log, in the window or not. Members are their own scores,
-- so reading a member reads its time (no WITHSCORES, no float replies).
local n = redis.call('ZCARD', key)
if n == 0 then
  -- No log (it expired with its newest entry): accepted, and the new entry
  -- is the oldest and the newest. Nothing here needs a number but the
  -- reply's (`+ 0` parses as tonumber() does, without a function call).
  redis.call('ZADD', key, member, member)
  redis.call('PEXPIRE', key, ARGV[3])
  return {1, ARGV[1] - 1, ARGV[2] + 0, 0}
end

local limit = ARGV[1] + 0
local window = ARGV[2] + 0
local now = member + 0
-- An entry is in the window while now - entry < window, i.e. entry > horizon.
local horizon = now - window

-- Numbers go to Redis as decimal strings built here: Redis would format a
-- Lua number argument with '%.17g', and Lua's tostring() prints µs
-- timestamps in exponent form; '%d' is exact below 2^53 and far cheaper.
local function int(x)
  return string.format('%d', x)
end

if n >= limit then
  -- The window holds the newest `count` entries; it holds `limit` or more
  -- exactly when the entry of rank n - limit (the limit-th newest) is in it,
  -- and that entry is the one whose leaving brings the count below the
  -- limit (count > limit only after the limit was lowered).
  -- That rank counted from the end is -limit.
  local rank = '-' .. ARGV[1]
  local entry = redis.call('ZRANGE', key, rank, rank)[1] + 0
  if entry > horizon then
    local retry = entry + window - now
    return {0, 0, retry, retry}
  end
end

-- Accepted. Trim what left the window; the count in the window is what
-- remains (Redis deletes the key when nothing does).
local count = n - redis.call('ZREMRANGEBYSCORE', key, '-inf', int(horizon))
if count == 0 then
  -- The new entry is the oldest and the newest.
  redis.call('ZADD', key, member, member)
  redis.call('PEXPIRE', key, ARGV[3])
  return {1, limit - 1, window, 0}
end

-- Keep scores strictly increasing so members stay unique, also if the server
-- clock stepped back (failover to a replica whose clock is behind).
local oldest = redis.call('ZRANGE', key, '0', '0')[1] + 0
local newest = oldest
if count > 1 then
  newest = redis.call('ZRANGE', key, '-1', '-1')[1] + 0
end
local score = now
if newest >= score then
  score = newest + 1
  member = int(score)
end
redis.call('ZADD', key, member, member)
if score == now then
  redis.call('PEXPIRE', key, ARGV[3])
else
  redis.call('PEXPIRE', key, int(math.ceil((score + window - now) / 1000)))
end
return {1, limit - count - 1, oldest + window - now, 0}
