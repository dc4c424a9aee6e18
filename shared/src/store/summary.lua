-- Reads the buckets that cover a summary window, as one consistent snapshot.
--
-- KEYS[i]   container hashes of one metric type (one hash slot)
-- ARGV      for each key in order: the number of fields m, then m fields
--           (bucket starts, unix s)
--
-- Returns: a flat array of the stored bucket values (in the bucket format of
-- `StoredBucket` in store/buckets.rs, or nil for an empty bucket) in argument
-- order, decoded by `SummaryReply` in store/mod.rs. The caller merges them;
-- the reply holds at most a few hundred short strings whatever the number of
-- points stored.
local out = {}
local at = 1
for i = 1, #KEYS do
  local m = tonumber(ARGV[at])
  at = at + 1
  if m > 0 then
    local values = redis.call('HMGET', KEYS[i], unpack(ARGV, at, at + m - 1))
    for j = 1, m do
      out[#out + 1] = values[j]
    end
  end
  at = at + m
end
return out
