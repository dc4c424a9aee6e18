-- Atomically adds metrics to their pre-aggregated time buckets, optionally
-- under an idempotency record, so that the key check and the write are one
-- indivisible step.
--
-- KEYS[1]   the idempotency record (a hash {fp, body}) when ARGV[1] == "1";
--           otherwise KEYS starts directly with the containers
-- KEYS[...] container hashes (`{p}:{<type>}:<m|h|d>:<container start>`), each
--           listed once. On a single node a batch may span several types; in
--           Redis Cluster the caller sends one call per type (one hash slot).
-- ARGV[1]   "1" when an Idempotency-Key was given, else "0"
-- ARGV[2]   fingerprint of the request (hex SHA-256 of its canonical metrics)
-- ARGV[3]   the 201 body to remember for replays
-- ARGV[4]   TTL of the idempotency record, s
-- ARGV[5]   n, the number of bucket updates that follow
-- ARGV[...] n groups of 4: key index (1-based into KEYS), field (bucket start,
--           unix s), value (a finite float as text), expire-at (unix s: the
--           container's end + retention, so storage stays bounded)
--
-- Each bucket is stored as one text value (decoded by store/stats.rs):
--
--   <count> <sum> <comp> <min> <max> <bins>[ <pfloor> <nfloor>]|<sketch>
--
-- sum and comp are a Neumaier compensated sum (the rounding error of every
-- addition is kept in comp); <sketch> is a DDSketch with relative accuracy
-- 1 % (store/sketch.rs): tokens " <key>" or " <key>:<count>", key = the bin
-- index ceil(ln|x| / ln gamma) of a positive value, "n" .. index of a
-- negative one, "z" for zero. <bins> counts the tokens; the floors (or "x")
-- appear once a store has been collapsed to its MAX_STORE_BINS highest bins.
-- Floats are written with 15 significant digits when that reads back the
-- same double, else 17. A bucket of the older format "count sum min max"
-- keeps its points and gains a sketch of the new ones only: its sketch then
-- counts fewer points than the bucket, which readers report as "no
-- percentiles".
--
-- Every new bucket value is computed first; only if all of them are finite
-- is anything written, so a batch is all or nothing.
--
-- Returns one of:
--   {"stored"}           the metrics were added (and the record written)
--   {"replay", body}     the same key and fingerprint were seen: nothing written
--   {"mismatch"}         the key was used with another body: nothing written
--   an error reply "OVERFLOW <u>"   the bucket sum of update u (0-based) would
--                                   overflow a double; nothing was written
if ARGV[1] == '1' then
  local seen = redis.call('HMGET', KEYS[1], 'fp', 'body')
  if seen[1] then
    if seen[1] == ARGV[2] then return { 'replay', seen[2] } end
    return { 'mismatch' }
  end
end

local LN_GAMMA = math.log((1 + 0.01) / (1 - 0.01))
-- A bucket's sketch is collapsed when it holds more than MAX_BINS tokens,
-- each store to its MAX_STORE_BINS highest bins.
local MAX_BINS = 4096
local MAX_STORE_BINS = 2048
-- A bucket receiving this many values in one call is parsed into a table
-- once; fewer are added by rewriting one token each (no parse).
local PARSE_AT = 8

local function fmt(x)
  local s = string.format('%.15g', x)
  if tonumber(s) ~= x then s = string.format('%.17g', x) end
  return s
end

local function load(stored, value)
  if not stored then
    return { count = 0, sum = 0, comp = 0, min = value, max = value,
             nbins = 0, body = '', values = {} }
  end
  local bar = string.find(stored, '|', 1, true)
  if not bar then
    local c, s, mn, mx = string.match(stored, '^(%S+) (%S+) (%S+) (%S+)$')
    return { count = tonumber(c), sum = tonumber(s), comp = 0,
             min = tonumber(mn), max = tonumber(mx),
             nbins = 0, body = '', values = {} }
  end
  local f = {}
  for w in string.gmatch(string.sub(stored, 1, bar - 1), '%S+') do f[#f + 1] = w end
  return { count = tonumber(f[1]), sum = tonumber(f[2]), comp = tonumber(f[3]),
           min = tonumber(f[4]), max = tonumber(f[5]), nbins = tonumber(f[6]),
           pf = tonumber(f[7]), nf = tonumber(f[8]),
           body = string.sub(stored, bar + 1), values = {} }
end

-- The sketch key of x in bucket b (its floors applied).
local function key_of(x, b)
  if x > 0 then
    local i = math.ceil(math.log(x) / LN_GAMMA)
    if b.pf and i < b.pf then i = b.pf end
    return string.format('%d', i)
  elseif x < 0 then
    local i = math.ceil(math.log(-x) / LN_GAMMA)
    if b.nf and i < b.nf then i = b.nf end
    return 'n' .. string.format('%d', i)
  end
  return 'z'
end

-- Adds one to the token of key in body; returns the new body and whether a
-- token was added.
local function bump(body, key)
  local needle = ' ' .. key
  local init = 1
  while true do
    local _, e = string.find(body, needle, init, true)
    if not e then return body .. needle, true end
    local after = string.sub(body, e + 1, e + 1)
    if after == '' or after == ' ' then
      return string.sub(body, 1, e) .. ':2' .. string.sub(body, e + 1), false
    elseif after == ':' then
      local digits = string.match(body, '^%d+', e + 2)
      return string.sub(body, 1, e + 1) .. string.format('%d', tonumber(digits) + 1)
        .. string.sub(body, e + 2 + #digits), false
    end
    init = e + 1
  end
end

local function parse_body(body)
  local t = {}
  for key, n in string.gmatch(body, ' ([^ :]+):?(%d*)') do
    t[key] = (t[key] or 0) + (n == '' and 1 or tonumber(n))
  end
  return t
end

-- Collapses each store of t holding more than MAX_STORE_BINS bins into its
-- MAX_STORE_BINS highest, the lowest of which absorbs the rest and becomes
-- the store's floor.
local function collapse(t, b)
  local pos, neg = {}, {}
  for key in pairs(t) do
    local first = string.sub(key, 1, 1)
    if first == 'n' then
      neg[#neg + 1] = tonumber(string.sub(key, 2))
    elseif first ~= 'z' then
      pos[#pos + 1] = tonumber(key)
    end
  end
  local function one(list, prefix, field)
    if #list <= MAX_STORE_BINS then return end
    table.sort(list, function(x, y) return x > y end)
    local floor = list[MAX_STORE_BINS]
    local floor_key = prefix .. string.format('%d', floor)
    for j = MAX_STORE_BINS + 1, #list do
      local key = prefix .. string.format('%d', list[j])
      t[floor_key] = t[floor_key] + t[key]
      t[key] = nil
    end
    b[field] = floor
  end
  one(pos, '', 'pf')
  one(neg, 'n', 'nf')
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
    b = load(redis.call('HGET', KEYS[key_index], field), value)
    buckets[id] = b
    order[#order + 1] = { key_index, field, ARGV[at + 3], id }
  end
  local t = b.sum + value
  if t ~= t or t == math.huge or t == -math.huge then
    return redis.error_reply('OVERFLOW ' .. i)
  end
  if math.abs(b.sum) >= math.abs(value) then
    b.comp = b.comp + ((b.sum - t) + value)
  else
    b.comp = b.comp + ((value - t) + b.sum)
  end
  b.sum = t
  b.count = b.count + 1
  if value < b.min then b.min = value end
  if value > b.max then b.max = value end
  b.values[#b.values + 1] = value
end

local expiring = {}
for _, u in ipairs(order) do
  local b = buckets[u[4]]
  local values = b.values
  if #values < PARSE_AT and b.nbins + #values <= MAX_BINS then
    for _, v in ipairs(values) do
      local added
      b.body, added = bump(b.body, key_of(v, b))
      if added then b.nbins = b.nbins + 1 end
    end
  else
    local t = parse_body(b.body)
    for _, v in ipairs(values) do
      local key = key_of(v, b)
      t[key] = (t[key] or 0) + 1
    end
    local bins = 0
    for _ in pairs(t) do bins = bins + 1 end
    if bins > MAX_BINS then collapse(t, b) end
    local parts = {}
    for key, count in pairs(t) do
      parts[#parts + 1] = count == 1 and key or (key .. ':' .. string.format('%d', count))
    end
    b.nbins = #parts
    b.body = #parts > 0 and (' ' .. table.concat(parts, ' ')) or ''
  end
  local head = string.format('%d %s %s %s %s %d', b.count, fmt(b.sum), fmt(b.comp),
    fmt(b.min), fmt(b.max), b.nbins)
  if b.pf or b.nf then
    head = head .. ' ' .. (b.pf and string.format('%d', b.pf) or 'x')
      .. ' ' .. (b.nf and string.format('%d', b.nf) or 'x')
  end
  redis.call('HSET', KEYS[u[1]], u[2], head .. '|' .. b.body)
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
