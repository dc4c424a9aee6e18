-- Read-through cache lookup with single-flight: returns the cached summary,
-- or takes the recompute lock, or says someone else holds it — in one call.
--
-- KEYS[1]  the cache entry, a hash {body = JSON text, at = stored at (unix ms),
--          by = token of the computation that stored it}
-- KEYS[2]  its lock, a string holding the owner's random token
-- ARGV[1]  this request's token (random, unique)
-- ARGV[2]  lock TTL, ms (covers the slowest permitted recomputation)
-- ARGV[3]  mode:
--          "read"    serve the entry if present, else try to take the lock
--          "refresh" ignore the entry (Cache-Control: no-cache), try the lock
--          "await"   a no-cache waiter: serve the entry as soon as a
--                    computation newer than the skipped copy stored it (even
--                    if yet another refresh holds the lock now); else wait
--                    while a lock is held; else take the lock (its owner
--                    vanished without storing)
-- ARGV[4]  "await" only: the `by` of the entry the request skipped ("" if
--          there was none); an entry with this `by` is the stale copy
--
-- Returns one of (decoded by `Lookup` in cache/mod.rs):
--   {"hit", body, ttl_left_ms, age_ms}   a hit (age from redis TIME)
--   {"locked"}                           the lock is ours: recompute and store
--   {"busy"}                             another request is recomputing: wait
--   {"busy", by}                         "refresh" only: as {"busy"}, with the
--                                        `by` of the entry being skipped (""
--                                        if none), to pass as ARGV[4] while
--                                        awaiting
local entry, lock = KEYS[1], KEYS[2]
local mode = ARGV[3]

-- skip: a `by` that marks the entry as the copy a no-cache request skipped.
local function hit(skip)
  local stored = redis.call('HMGET', entry, 'body', 'at', 'by')
  if not stored[1] then return nil end
  if skip and (stored[3] or '') == skip then return nil end
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local age = now_ms - (tonumber(stored[2]) or now_ms)
  if age < 0 then age = 0 end
  return { 'hit', stored[1], redis.call('PTTL', entry), age }
end

if mode == 'read' then
  local found = hit()
  if found then return found end
elseif mode == 'await' then
  -- Any entry other than the skipped copy was stored after this request
  -- arrived: it is the fresh value asked for. Checked before the lock, so a
  -- stream of later no-cache requests taking the lock in turn cannot keep
  -- the waiters waiting.
  local found = hit(ARGV[4] or '')
  if found then return found end
  if redis.call('EXISTS', lock) == 1 then return { 'busy' } end
  -- The lock is gone and nothing new was stored: its owner vanished or
  -- failed; take over below.
end

if redis.call('SET', lock, ARGV[1], 'NX', 'PX', ARGV[2]) then
  return { 'locked' }
end
if mode == 'refresh' then
  return { 'busy', redis.call('HGET', entry, 'by') or '' }
end
return { 'busy' }
