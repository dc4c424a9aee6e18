-- Claims tag values and tag combinations of metric types against their
-- caps, atomically: either every claim of the call is admitted (new members
-- added, known ones refreshed) or none is and the call names the first
-- claim beyond its cap. Every key of one call lies in one hash slot in
-- cluster mode (the caller groups the metric types by slot).
--
-- KEYS[i]     registries (sorted sets: member -> the latest metric
--             timestamp claimed with it, unix s): `{p}:{<type>}:tc` (the
--             type's tag combinations, canonical text) or
--             `{p}:{<type>}:tv:<key>` (the values of one tag key), each once
-- ARGV[1]     the retention, s: members whose score is older than
--             now - retention (Redis' clock) no longer count and are removed
-- ARGV[2]     seconds a registry outlives its newest member (slack)
-- ARGV[3..2+#KEYS]  the cap of each registry, in KEYS order
-- ARGV[...]   the claims, in groups of 3: key index (1-based into KEYS),
--             member, metric timestamp (unix s)
--
-- Returns (decoded by `ClaimReply` in store/tagged.rs):
--   {"claimed"}     every claim admitted; scores raised to the claim's
--                   timestamp when later (ZADD GT), each registry expiring
--                   with its newest member
--   {"capped", c}   claim c (0-based) would be the (cap + 1)-th member of
--                   its registry: nothing written
local now = tonumber(redis.call('TIME')[1])
local retention = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local n = #KEYS
local cutoff = now - retention

local size = {}
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. cutoff)
  size[i] = redis.call('ZCARD', KEYS[i])
end

local fresh = {}
local at = 3 + n
local c = 0
while at <= #ARGV do
  local i = tonumber(ARGV[at])
  local member = ARGV[at + 1]
  local seen = fresh[i]
  if not seen then
    seen = {}
    fresh[i] = seen
  end
  if not seen[member] and not redis.call('ZSCORE', KEYS[i], member) then
    seen[member] = true
    size[i] = size[i] + 1
    if size[i] > tonumber(ARGV[2 + i]) then
      return { 'capped', c }
    end
  end
  at = at + 3
  c = c + 1
end

at = 3 + n
while at <= #ARGV do
  redis.call('ZADD', KEYS[tonumber(ARGV[at])], 'GT', ARGV[at + 2], ARGV[at + 1])
  at = at + 3
end
for i = 1, n do
  local newest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if newest[2] then
    redis.call('EXPIREAT', KEYS[i], tonumber(newest[2]) + retention + slack)
  end
end
return { 'claimed' }
