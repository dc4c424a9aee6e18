-- Stores a freshly computed summary and releases the recompute lock, if this
-- request still owns it.
--
-- KEYS[1]  the cache entry (hash {body, at, by})
-- KEYS[2]  its lock
-- ARGV[1]  the owner's token (stored as `by`: which computation wrote the
--          entry, so a no-cache waiter can tell a refreshed entry from the
--          one it skipped)
-- ARGV[2]  the body (JSON text); empty = release the lock only (the
--          computation failed, and errors are never cached)
-- ARGV[3]  TTL of the entry, ms
--
-- The entry is written even if the lock expired meanwhile (the value is still
-- the newest computed); the lock is deleted only by its owner, so a slow owner
-- never releases a lock a successor took over.
-- Returns: 1 if the lock was released by us, 0 otherwise (decoded as a bool).
if ARGV[2] ~= '' then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('HSET', KEYS[1], 'body', ARGV[2], 'at', now_ms, 'by', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
