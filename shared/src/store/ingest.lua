-- Atomically adds metrics to their pre-aggregated time buckets, optionally
-- under an idempotency record, so that the key check and the write are one
-- indivisible step.
--
-- KEYS[1]   the idempotency record (a hash {fp, body}) when ARGV[1] == "1";
--           otherwise KEYS starts directly with the containers
-- KEYS[...] container hashes (`{p}:{<type>}:<m|h|d>:<container start>`), each
--           listed once. A batch spanning several metric types, or one with
--           an idempotency record, touches keys of several hash tags: a
--           single Redis node accepts that, Redis Cluster refuses it
--           (CROSSSLOT), which is why cluster mode is not supported.
-- ARGV[1]   "1" when an Idempotency-Key was given, else "0"
-- ARGV[2]   fingerprint of the request (hex SHA-256 of its canonical metrics)
-- ARGV[3]   the 201 body to remember for replays
-- ARGV[4]   TTL of the idempotency record, s
-- ARGV[5]   n, the number of bucket updates that follow
-- ARGV[...] n groups of 4: key index (1-based into KEYS), field (bucket start,
--           unix s), value (a finite float as text), expire-at (unix s: the
--           container's end + retention, so storage stays bounded)
--
-- Each bucket is stored in the bucket format defined by `StoredBucket` in
-- store/buckets.rs: "count sum min max", read by decode_bucket and written by
-- encode_bucket below (floats as %.17g, which round-trips a double). Every new
-- bucket value is computed first; only if all of them are finite is anything
-- written, so a batch is all or nothing.
--
-- Returns one of (decoded by `IngestReply` in store/mod.rs):
--   {"stored"}           the metrics were added (and the record written)
--   {"replay", body}     the same key and fingerprint were seen: nothing written
--   {"mismatch"}         the key was used with another body: nothing written
--   {"overflow", u}      the bucket sum of update u (0-based) would overflow a
--                        double: nothing written
-- The bucket format (StoredBucket in store/buckets.rs).
local function decode_bucket(stored)
  local c, s, mn, mx = string.match(stored, '^(%S+) (%S+) (%S+) (%S+)$')
  return { tonumber(c), tonumber(s), tonumber(mn), tonumber(mx) }
end

local function encode_bucket(b)
  return string.format('%d %.17g %.17g %.17g', b[1], b[2], b[3], b[4])
end

if ARGV[1] == '1' then
  local seen = redis.call('HMGET', KEYS[1], 'fp', 'body')
  if seen[1] then
    if seen[1] == ARGV[2] then return { 'replay', seen[2] } end
    return { 'mismatch' }
  end
end

local n = tonumber(ARGV[5])
local buckets = {}
local order = {}
for i = 0, n - 1 do
  local at = 6 + i * 4
  local key_index = tonumber(ARGV[at])
  local field = ARGV[at + 1]
  local value = tonumber(ARGV[at + 2])
  local id = key_index .. '|' .. field
  local b = buckets[id]
  if not b then
    local stored = redis.call('HGET', KEYS[key_index], field)
    if stored then
      b = decode_bucket(stored)
    else
      b = { 0, 0, value, value }
    end
    buckets[id] = b
    order[#order + 1] = { key_index, field, ARGV[at + 3], id }
  end
  b[1] = b[1] + 1
  b[2] = b[2] + value
  if value < b[3] then b[3] = value end
  if value > b[4] then b[4] = value end
  if b[2] ~= b[2] or b[2] == math.huge or b[2] == -math.huge then
    return { 'overflow', i }
  end
end

local expiring = {}
for _, u in ipairs(order) do
  local b = buckets[u[4]]
  redis.call('HSET', KEYS[u[1]], u[2], encode_bucket(b))
  if not expiring[u[1]] then
    redis.call('EXPIREAT', KEYS[u[1]], u[3])
    expiring[u[1]] = true
  end
end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'fp', ARGV[2], 'body', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return { 'stored' }
