-- Stores a freshly computed summary and releases the recompute lock, if this
-- request still owns it.
--
-- KEYS[1]  the cache entry (a string, below)
-- KEYS[2]  its lock
-- ARGV[1]  the owner's token (stored as `by`: which computation wrote the
--          entry, so a no-cache waiter can tell a refreshed entry from the
--          one it skipped); letters and digits only
-- ARGV[2]  the body (JSON text); empty = release the lock only (the
--          computation failed, and errors are never cached)
-- ARGV[3]  TTL of the entry, ms
--
-- The entry is the body followed by one line
-- "\n<stored_at_ms> <expires_at_ms> <by>", times in unix ms from Redis TIME,
-- so that a hit — one plain GET — tells the entry's age and what is left of
-- its TTL without a script or a second command. Written with SET and APPEND
-- so the body is never copied into a Lua string.
--
-- The entry is written even if the lock expired meanwhile (the value is still
-- the newest computed); the lock is deleted only by its owner, so a slow owner
-- never releases a lock a successor took over.
-- Returns: 1 if the lock was released by us, 0 otherwise (decoded as a bool).
if ARGV[2] ~= '' then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local ttl = tonumber(ARGV[3])
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  -- '%.0f': tostring() would print ms timestamps in exponent form.
  redis.call('APPEND', KEYS[1],
    string.format('\n%.0f %.0f ', now_ms, now_ms + ttl) .. ARGV[1])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
