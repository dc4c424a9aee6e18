-- Single-flight after a cache miss: serves the entry if one appeared
-- meanwhile, or takes the recompute lock, or says someone else holds it — in
-- one call. A hit never runs this script: it is one plain GET of the entry.
--
-- KEYS[1]  the cache entry, a string: the body (JSON text), then one line
--          "\n<stored_at_ms> <expires_at_ms> <by>" written by
--          store_and_unlock.lua (unix ms from Redis TIME; `by` the token of
--          the computation that stored it)
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
--   {"hit", entry}   the stored entry, body and trailing line as stored
--   {"locked"}       the lock is ours: recompute and store
--   {"busy"}         another request is recomputing: wait
--   {"busy", by}     "refresh" only: as {"busy"}, with the `by` of the entry
--                    being skipped ("" if none), to pass as ARGV[4] while
--                    awaiting
local entry, lock = KEYS[1], KEYS[2]
local mode = ARGV[3]

-- The `by` of the stored entry, or nil when there is none. Only the entry's
-- last bytes are read (the trailing line is at most 75): a body can be long.
local function stored_by()
  local tail = redis.call('GETRANGE', entry, -96, -1)
  return string.match(tail, '\n%d+ %d+ (%w*)$')
end

-- skip: a `by` that marks the entry as the copy a no-cache request skipped.
local function hit(skip)
  local by = stored_by()
  if not by or (skip and by == skip) then return nil end
  return { 'hit', redis.call('GET', entry) }
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
  return { 'busy', stored_by() or '' }
end
return { 'busy' }
