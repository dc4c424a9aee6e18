-- Atomically adds metrics to their pre-aggregated time buckets, optionally
-- under idempotency records, so that the key check and the write are one
-- indivisible step. Every key of one call lies in one hash slot in cluster
-- mode (the caller groups the metric types by slot); on a single node one
-- call may hold every type of a batch.
--
-- KEYS[1..r]  idempotency records (hashes {fp, body}), one per part (r == p),
--             or none (r == 0, no Idempotency-Key)
-- KEYS[r+1..] container hashes (`{p}:{<type>}:<m|h|d>:<container start>`),
--             each listed once
-- ARGV[1]     "write", or "check": decide as "write" would, write nothing
-- ARGV[2]     r, the number of records
-- ARGV[3]     fingerprint of the whole request (hex SHA-256 of its canonical
--             metrics)
-- ARGV[4]     the 201 body to remember for replays
-- ARGV[5]     TTL of the records, s
-- ARGV[6]     p, the number of parts (a part: the updates one record covers)
-- ARGV[7..6+p] the number of updates of each part, in order
-- ARGV[...]   the updates, part after part, in groups of 4: key index (1-based
--             into KEYS), field (bucket start, unix s), value (a finite float
--             as text), expire-at (unix s: the container's end + retention,
--             so storage stays bounded)
--
-- A part whose record already holds this fingerprint was stored by an
-- earlier attempt of the same request: its updates are skipped (a retry after
-- a partial failure stores only what is missing). A record holding another
-- fingerprint refuses the whole call.
--
-- Each bucket is stored in the bucket format defined by `StoredBucket` in
-- store/buckets.rs: "count sum min max", read by decode_bucket and written by
-- encode_bucket below (floats as %.17g, which round-trips a double). Every new
-- bucket value is computed first; only if all of them are finite is anything
-- written, so a call is all or nothing.
--
-- Returns one of (decoded by `IngestReply` in store/mod.rs):
--   {"stored"}           the metrics of the parts not yet recorded were added
--                        and their records written
--   {"checked"}          ("check") "write" would have stored
--   {"replay", body}     every part's record holds this fingerprint: nothing
--                        written; the body of the first
--   {"mismatch"}         a record holds another fingerprint: nothing written
--   {"overflow", u}      the bucket sum of update u (0-based, over all parts)
--                        would overflow a double: nothing written
local function decode_bucket(stored)
  local c, s, mn, mx = string.match(stored, '^(%S+) (%S+) (%S+) (%S+)$')
  return { tonumber(c), tonumber(s), tonumber(mn), tonumber(mx) }
end

local function encode_bucket(b)
  return string.format('%d %.17g %.17g %.17g', b[1], b[2], b[3], b[4])
end

local check_only = ARGV[1] == 'check'
local r = tonumber(ARGV[2])
local fingerprint = ARGV[3]
local p = tonumber(ARGV[6])

local done = {}
local replay_body = nil
local fresh = 0
for j = 1, r do
  local seen = redis.call('HMGET', KEYS[j], 'fp', 'body')
  if seen[1] then
    if seen[1] ~= fingerprint then return { 'mismatch' } end
    done[j] = true
    if not replay_body then replay_body = seen[2] end
  else
    fresh = fresh + 1
  end
end
if r > 0 and fresh == 0 then return { 'replay', replay_body } end

local buckets = {}
local order = {}
local at = 7 + p
local u = 0
for j = 1, p do
  local count = tonumber(ARGV[6 + j])
  if done[j] then
    at = at + 4 * count
    u = u + count
  else
    for _ = 1, count do
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
        return { 'overflow', u }
      end
      at = at + 4
      u = u + 1
    end
  end
end
if check_only then return { 'checked' } end

local expiring = {}
for _, w in ipairs(order) do
  local b = buckets[w[4]]
  redis.call('HSET', KEYS[w[1]], w[2], encode_bucket(b))
  if not expiring[w[1]] then
    redis.call('EXPIREAT', KEYS[w[1]], w[3])
    expiring[w[1]] = true
  end
end
for j = 1, r do
  if not done[j] then
    redis.call('HSET', KEYS[j], 'fp', fingerprint, 'body', ARGV[4])
    redis.call('EXPIRE', KEYS[j], ARGV[5])
  end
end
return { 'stored' }
