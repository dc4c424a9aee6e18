-- Read-through cache lookup with single-flight: returns the cached summary,
-- or takes the recompute lock, or says someone else holds it — in one call.
--
-- KEYS[1]  the cache entry, a hash {body = JSON text, at = stored at (unix ms)}
-- KEYS[2]  its lock, a string holding the owner's random token
-- ARGV[1]  this request's token (random, unique)
-- ARGV[2]  lock TTL, ms (covers the slowest permitted recomputation)
-- ARGV[3]  mode:
--          "read"    serve the entry if present, else try to take the lock
--          "refresh" ignore the entry (Cache-Control: no-cache), try the lock
--          "await"   a no-cache waiter: while a lock is held keep waiting,
--                    then serve the entry the owner refreshed (or take over)
--
-- Returns one of:
--   {1, body, ttl_left_ms, age_ms}   a hit (age from redis TIME)
--   {2}                              the lock is ours: recompute and store
--   {0}                              another request is recomputing: wait
local entry, lock = KEYS[1], KEYS[2]
local mode = ARGV[3]

local function hit()
  local stored = redis.call('HMGET', entry, 'body', 'at')
  if not stored[1] then return nil end
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local age = now_ms - (tonumber(stored[2]) or now_ms)
  if age < 0 then age = 0 end
  return { 1, stored[1], redis.call('PTTL', entry), age }
end

if mode == 'read' then
  local found = hit()
  if found then return found end
elseif mode == 'await' then
  if redis.call('EXISTS', lock) == 1 then return { 0 } end
  local found = hit()
  if found then return found end
end

if redis.call('SET', lock, ARGV[1], 'NX', 'PX', ARGV[2]) then
  return { 2 }
end
return { 0 }
