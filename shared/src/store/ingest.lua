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
-- ARGV[...]   the updates, part after part, in groups of 5: key index (1-based
--             into KEYS), field (bucket start, unix s), value (a finite float
--             as text), expire-at (unix s: the container's end + retention,
--             so storage stays bounded), and the value's sketch key (below;
--             computed by the caller, `sketch::bin_key` in store/sketch.rs,
--             so that the script takes no logarithm)
--
-- A part whose record already holds this fingerprint was stored by an
-- earlier attempt of the same request: its updates are skipped (a retry after
-- a partial failure stores only what is missing). A record holding another
-- fingerprint refuses the whole call.
--
-- Each bucket is stored in the bucket format defined by `StoredBucket` in
-- store/buckets.rs: one or two fields of its container,
--
--   <start>     <count> <sum> <comp> <min> <max> <sbins> <rbins>[ <pfloor> <nfloor>]|<recent>
--   <start>.s   <sketch>   (only once the bucket has more than RECENT bins)
--
-- sum and comp are a Neumaier compensated sum (the rounding error of every
-- addition is kept in comp). The sketch is a DDSketch with relative accuracy
-- 1 % (store/sketch.rs) held as tokens " <key>" or " <key>:<count>" (count
-- in decimal), where key is the bin index ceil(ln|x| / ln gamma) in base 62
-- (digits 0-9 A-Z a-z, '-' in front when negative) for x > 0, '~' and the
-- index for x < 0, '.' for zero. The tokens are split in two: <recent>, at
-- most RECENT tokens (rbins of them), which a single ingest rewrites in the
-- short main field, and the field <start>.s (sbins tokens), into which the
-- recent tokens are folded once there are RECENT of them, so that a single
-- ingest copies short texts only; a minute bucket rarely needs the second
-- field. A key may appear in both parts: readers add them. The floors
-- (decimal indexes, or "x") appear once a store has been collapsed to its
-- MAX_STORE_BINS highest bins. sum and comp are written with 17 significant
-- digits (enough to read back the same double), min and max with 15 when
-- that reads back the same double. A bucket of the older format
-- "count sum min max" keeps its points and gains a sketch of the new ones
-- only: its sketch then counts fewer points than the bucket, which readers
-- report as "no percentiles".
--
-- Every new bucket value is computed first; only if all of them are finite
-- is anything written, so a call is all or nothing.
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
-- A bucket's sketch is collapsed when it holds more than MAX_BINS tokens,
-- each store to its MAX_STORE_BINS highest bins.
local MAX_BINS = 4096
local MAX_STORE_BINS = 2048
-- A bucket receiving one value in a call (a single ingest) gets one token
-- rewritten or appended in its recent part; a bucket receiving several (a
-- batch), or whose recent part is full, has its tokens parsed into a table
-- once and written back.
local RECENT = 128

local DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

-- An integer in base 62 (digits 0-9 A-Z a-z), '-' in front when negative;
-- one string built per call (string.char), memoised for the script call, as
-- a batch meets the same bins again and again.
local DIGIT_BYTES -- digit d at d + 1, built on first use
local b62_memo = {}
local function b62(i)
  local known = b62_memo[i]
  if known then return known end
  DIGIT_BYTES = DIGIT_BYTES or { string.byte(DIGITS, 1, 62) }
  local m = i < 0 and -i or i
  local s
  if m < 62 then
    s = string.char(DIGIT_BYTES[m + 1])
  elseif m < 3844 then
    local lo = m % 62
    s = string.char(DIGIT_BYTES[(m - lo) / 62 + 1], DIGIT_BYTES[lo + 1])
  else
    local c = m % 62
    local rest = (m - c) / 62
    local b = rest % 62
    rest = (rest - b) / 62
    local a = rest % 62
    s = string.char(DIGIT_BYTES[(rest - a) / 62 + 1], DIGIT_BYTES[a + 1], DIGIT_BYTES[b + 1], DIGIT_BYTES[c + 1])
    s = string.gsub(s, '^0+', '')
  end
  if i < 0 then s = '-' .. s end
  b62_memo[i] = s
  return s
end

-- The shortest of %.15g and %.17g that reads back as x.
local function fmt(x)
  local s = string.format('%.15g', x)
  if tonumber(s) ~= x then s = string.format('%.17g', x) end
  return s
end

-- A bucket being updated. src is the main field's text and from the
-- position of its recent tokens in it (kept as is until written, so that
-- adding one value copies the short text once).
local function load(stored, value)
  if not stored then
    return { count = 0, sum = 0, comp = 0, min = value, max = value, sbins = 0,
             rbins = 0, src = '', from = 1, values = {} }
  end
  local c, sm, k, mn, mx, sbins, rbins, floors, from =
    string.match(stored, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%d+) (%d+)([^|]*)|()')
  if not c then
    -- The format before sketches: its points are not in the sketch.
    c, sm, mn, mx = string.match(stored, '^(%S+) (%S+) (%S+) (%S+)$')
    return { count = tonumber(c), sum = tonumber(sm), comp = 0,
             min = tonumber(mn), max = tonumber(mx), mint = mn, maxt = mx,
             sbins = 0, rbins = 0, src = '', from = 1, values = {} }
  end
  local pf, nf
  if floors ~= '' then pf, nf = string.match(floors, '^ (%S+) (%S+)$') end
  return { count = tonumber(c), sum = tonumber(sm), comp = tonumber(k),
           min = tonumber(mn), max = tonumber(mx), mint = mn, maxt = mx,
           sbins = tonumber(sbins), rbins = tonumber(rbins),
           pf = tonumber(pf), nf = tonumber(nf),
           src = stored, from = from, values = {} }
end

-- The index a base-62 key (without its '~') stands for.
local function b62_index(text)
  local sign = 1
  if string.sub(text, 1, 1) == '-' then sign, text = -1, string.sub(text, 2) end
  local i = 0
  for j = 1, #text do i = i * 62 + string.find(DIGITS, string.sub(text, j, j), 1, true) - 1 end
  return sign * i
end

-- The key a value's key is counted under in bucket b: a bin below the floor
-- of a collapsed store is that floor's bin.
local function floored(key, b)
  if not (b.pf or b.nf) then return key end
  local first = string.sub(key, 1, 1)
  if first == '~' then
    if b.nf and b62_index(string.sub(key, 2)) < b.nf then return '~' .. b62(b.nf) end
  elseif first ~= '.' then
    if b.pf and b62_index(key) < b.pf then return b62(b.pf) end
  end
  return key
end

-- Where the token of key is in src (searching from position from): returns
-- the end of the text to keep, the text to insert and where to resume, or
-- nil when the key has no token yet.
local function find_token(src, from, key)
  local needle = ' ' .. key
  local init = from
  while true do
    local _, e = string.find(src, needle, init, true)
    if not e then return nil end
    local after = string.byte(src, e + 1)
    if after == nil or after == 32 then
      return e, ':2', e + 1
    elseif after == 58 then
      local digits = string.match(src, '^%d+', e + 2)
      return e + 1, string.format('%d', tonumber(digits) + 1), e + 2 + #digits
    end
    init = e + 1
  end
end

local function parse_tokens(t, text)
  for key, n in string.gmatch(text, ' ([^ :]+):?(%d*)') do
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
    if first == '~' then
      neg[#neg + 1] = key
    elseif first ~= '.' then
      pos[#pos + 1] = key
    end
  end
  local function index(key)
    if string.sub(key, 1, 1) == '~' then return b62_index(string.sub(key, 2)) end
    return b62_index(key)
  end
  local function one(keys, field)
    if #keys <= MAX_STORE_BINS then return end
    local indexed = {}
    for j, key in ipairs(keys) do indexed[j] = { index(key), key } end
    table.sort(indexed, function(x, y) return x[1] > y[1] end)
    local floor_key = indexed[MAX_STORE_BINS][2]
    for j = MAX_STORE_BINS + 1, #indexed do
      local key = indexed[j][2]
      t[floor_key] = t[floor_key] + t[key]
      t[key] = nil
    end
    b[field] = indexed[MAX_STORE_BINS][1]
  end
  one(pos, 'pf')
  one(neg, 'nf')
end

-- The main field's header, up to and with the '|'.
local function header(b)
  local h = string.format('%d %.17g %.17g %s %s %d %d', b.count, b.sum, b.comp,
    b.mint or fmt(b.min), b.maxt or fmt(b.max), b.sbins, b.rbins)
  if b.pf or b.nf then
    h = h .. ' ' .. (b.pf and string.format('%d', b.pf) or 'x')
      .. ' ' .. (b.nf and string.format('%d', b.nf) or 'x')
  end
  return h .. '|'
end

local function serialize(t)
  local parts = {}
  for key, count in pairs(t) do
    parts[#parts + 1] = count == 1 and key or (key .. ':' .. string.format('%d', count))
  end
  return #parts > 0 and (' ' .. table.concat(parts, ' ')) or '', #parts
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
    at = at + 5 * count
    u = u + count
  else
    for _ = 1, count do
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
        return { 'overflow', u }
      end
      if math.abs(b.sum) >= math.abs(value) then
        b.comp = b.comp + ((b.sum - t) + value)
      else
        b.comp = b.comp + ((value - t) + b.sum)
      end
      b.sum = t
      b.count = b.count + 1
      if value < b.min then b.min = value; b.mint = nil end
      if value > b.max then b.max = value; b.maxt = nil end
      b.values[#b.values + 1] = ARGV[at + 4]
      at = at + 5
      u = u + 1
    end
  end
end
if check_only then return { 'checked' } end

local expiring = {}
for _, u in ipairs(order) do
  local b = buckets[u[4]]
  local key_name, field = KEYS[u[1]], u[2]
  local values = b.values
  local text
  if #values == 1 and b.rbins < RECENT then
    -- One value (a single ingest): rewrite or append one recent token,
    -- copying the short main text once.
    local key = floored(values[1], b)
    local keep, insert, resume = find_token(b.src, b.from, key)
    if keep then
      text = header(b) .. string.sub(b.src, b.from, keep) .. insert .. string.sub(b.src, resume)
    else
      b.rbins = b.rbins + 1
      text = header(b) .. string.sub(b.src, b.from) .. ' ' .. key
    end
  else
    local t = parse_tokens({}, string.sub(b.src, b.from))
    if b.sbins > 0 then
      parse_tokens(t, redis.call('HGET', key_name, field .. '.s') or '')
    end
    for _, v in ipairs(values) do
      local key = floored(v, b)
      t[key] = (t[key] or 0) + 1
    end
    local bins = 0
    for _ in pairs(t) do bins = bins + 1 end
    if bins > MAX_BINS then collapse(t, b) end
    local tokens, count = serialize(t)
    if b.sbins == 0 and count <= RECENT then
      b.rbins = count
      text = header(b) .. tokens
    else
      b.sbins, b.rbins = count, 0
      redis.call('HSET', key_name, field .. '.s', tokens)
      text = header(b)
    end
  end
  redis.call('HSET', key_name, field, text)
  if not expiring[u[1]] then
    redis.call('EXPIREAT', key_name, u[3])
    expiring[u[1]] = true
  end
end
for j = 1, r do
  if not done[j] then
    redis.call('HSET', KEYS[j], 'fp', fingerprint, 'body', ARGV[4])
    redis.call('EXPIRE', KEYS[j], ARGV[5])
  end
end
return { 'stored' }
