-- The registry of live metric types: one deployment's cardinality cap
-- (MAX_METRIC_TYPES) and each client's budget of new types per hour,
-- decided atomically for every instance of every function.
--
-- KEYS[1]  the registry: a sorted set, member = metric type, score = unix s
--          until which the type counts. For a type with data, that is the
--          latest expiry of any of its bucket containers (or later), so a
--          type counts exactly as long as Redis holds any of its data; for
--          a type reserved by a request still storing it, now + the
--          reservation. The key itself expires with its last member.
-- KEYS[2]  ("claim", "release") the client's creations of the last hour: a
--          sorted set, member = metric type, score = unix ms of its creation.
--          Expires an hour after its newest entry.
-- ARGV[1]  "claim", "confirm" or "release"
--
-- claim: admit the types of one request, or refuse it whole.
--   ARGV[2]  MAX_METRIC_TYPES (live members allowed)
--   ARGV[3]  new types a client may create per hour
--   ARGV[4]  the reservation, s: how long a type new to the registry counts
--            before "confirm" (a request deadline and a margin; far below the
--            day that data always outlives its write)
--   ARGV[5]  the floor, s: a type touched now counts at least this long (the
--            idempotency TTL and the callers' recheck interval), so that a
--            retry of an accepted request always finds its types
--   ARGV[6..] pairs: metric type, expiry (unix s: the latest expiry of the
--            containers the request writes for that type)
--   Types not in the registry are new: if the live members plus the new
--   types exceed the cap, or the client's creations of the last hour plus
--   the new types exceed its budget, nothing is written. Else each new type
--   is reserved (score now + reservation) and entered in the client's
--   creations; each registered type's score rises to its expiry (at least
--   now + floor). A member whose score lies within the reservation of now is
--   a reservation (data always expires more than a day after its write): it
--   counts, is not new, and is confirmed by whichever request stores it.
-- confirm: the request stored its metrics (or replayed them).
--   ARGV[2]  the floor, s
--   ARGV[3..] pairs: metric type, expiry; each type's score becomes
--            max(score, expiry, now + floor), the type added if missing (its
--            data is in Redis now, so it must count)
-- release: the request was refused after its claim (nothing stored).
--   ARGV[2]  the reservation, s
--   ARGV[3..] the metric types its claim reserved; each one still only
--            reserved (no request confirmed it meanwhile) is removed, from
--            the registry and from the client's creations
--
-- Returns (decoded by `RegistryReply` in store/registry.rs):
--   {"admitted", live, n, i...}  claim: admitted; live = members now; i =
--                             the 1-based positions (in the pairs) of the
--                             types to confirm: first the n types this call
--                             reserved, then those another request had
--   {"limit", live, new}      claim: the cap would be exceeded; nothing written
--   {"budget", retry_ms}      claim: the client's budget would be exceeded;
--                             nothing written; retry_ms = ms until enough of
--                             its creations leave the hour, -1 if never (the
--                             request alone holds more new types than that)
--   {"confirmed"}, {"released"}
--
-- Time is Redis' (TIME), never the caller's. Needs effects replication (the
-- only mode since Redis 7): the script writes after reading TIME.

local registry = KEYS[1]
local mode = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local HOUR_MS = 3600000

local function int(n)
  -- tostring() would print large numbers in exponent form.
  return string.format('%.0f', n)
end

-- The registry expires with its last member.
local function expire_with_last_member()
  local last = redis.call('ZRANGE', registry, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('EXPIREAT', registry, int(tonumber(last[2])))
  end
end

if mode == 'claim' then
  local cap = tonumber(ARGV[2])
  local budget = tonumber(ARGV[3])
  local reservation = tonumber(ARGV[4])
  local floor = now + tonumber(ARGV[5])
  local creations = KEYS[2]
  redis.call('ZREMRANGEBYSCORE', registry, '-inf', int(now))
  local live = redis.call('ZCARD', registry)
  local new, positions, reserved, registered = {}, {}, {}, {}
  for i = 6, #ARGV, 2 do
    local score = redis.call('ZSCORE', registry, ARGV[i])
    if not score then
      new[#new + 1] = ARGV[i]
      positions[#positions + 1] = (i - 4) / 2
    elseif tonumber(score) <= now + reservation then
      reserved[#reserved + 1] = (i - 4) / 2
    else
      registered[#registered + 1] = i
    end
  end
  if #new > 0 then
    if live + #new > cap then
      return { 'limit', live, #new }
    end
    redis.call('ZREMRANGEBYSCORE', creations, '-inf', int(now_ms - HOUR_MS))
    local made = redis.call('ZCARD', creations)
    if made + #new > budget then
      if #new > budget then
        return { 'budget', -1 }
      end
      -- Room for the new types once the (made + #new - budget) oldest
      -- creations have left the hour.
      local entry = redis.call('ZRANGE', creations, made + #new - budget - 1,
        made + #new - budget - 1, 'WITHSCORES')
      return { 'budget', math.max(1, tonumber(entry[2]) + HOUR_MS - now_ms) }
    end
    for _, name in ipairs(new) do
      redis.call('ZADD', registry, int(now + reservation), name)
      redis.call('ZADD', creations, int(now_ms), name)
    end
    redis.call('PEXPIRE', creations, HOUR_MS)
    live = live + #new
  end
  for _, i in ipairs(registered) do
    local score = math.max(tonumber(ARGV[i + 1]), floor)
    redis.call('ZADD', registry, 'GT', int(score), ARGV[i])
  end
  expire_with_last_member()
  local reply = { 'admitted', live, #positions }
  for _, i in ipairs(positions) do reply[#reply + 1] = i end
  for _, i in ipairs(reserved) do reply[#reply + 1] = i end
  return reply
elseif mode == 'confirm' then
  local floor = now + tonumber(ARGV[2])
  for i = 3, #ARGV, 2 do
    local score = math.max(tonumber(ARGV[i + 1]), floor)
    redis.call('ZADD', registry, 'GT', int(score), ARGV[i])
  end
  expire_with_last_member()
  return { 'confirmed' }
elseif mode == 'release' then
  local reservation = tonumber(ARGV[2])
  for i = 3, #ARGV do
    local score = redis.call('ZSCORE', registry, ARGV[i])
    if score and tonumber(score) <= now + reservation then
      redis.call('ZREM', registry, ARGV[i])
      redis.call('ZREM', KEYS[2], ARGV[i])
    end
  end
  return { 'released' }
end
return redis.error_reply('registry.lua: unknown mode ' .. tostring(mode))
