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
-- Each bucket is one field of its container, `<start>`, holding the binary
-- bucket format defined by `StoredBucket` in store/buckets.rs (packed and
-- unpacked with Redis' built-in `struct` library, little-endian):
--
--   tag u8 (1 sparse, 2 dense, +4 when floors follow) | w u8 (bytes per
--   count: 1, 2, 4 or 6) | count u48 | sum f64 | comp f64 | min f64 |
--   max f64 | [pf i32 | nf i32] | bins
--
-- sum and comp are a Neumaier compensated sum (the rounding error of every
-- addition is kept in comp). The bins are a DDSketch with relative accuracy
-- 1 % (store/sketch.rs), each bin named by its key, an i24 computed by the
-- caller (`sketch::bin_key`, so that the script takes no logarithm): 0 for
-- zero, index + 40001 for the bin `index` of the positive store,
-- -(index + 40001) for the negative store. Sparse bins are (key i24, count
-- uw) pairs in ascending key order; dense bins are the first key (i24) and
-- the counts (uw) of every key from it on, zeros included: whichever is
-- shorter. The floors (keys, 0 when unset) appear once a store has been
-- collapsed to its MAX_STORE_BINS highest bins.
--
-- A bucket receiving a few values (a single ingest: one) has each value's
-- bin patched in place: a binary search over the sparse pairs (or an offset
-- into the dense run), and the header and the one count rewritten, copying
-- the rest of the text as is. A bucket receiving many values, or whose patch
-- would widen the counts, extend the dense run or make the other layout the
-- shorter, is decoded once into a table, added to and encoded again.
--
-- Buckets of the text formats written before (`<count> <sum> <comp> <min>
-- <max> <sbins> <rbins>[ <pfloor> <nfloor>]|<tokens>` with the field
-- `<start>.s`, and the older `<count> <sum> <min> <max>`) are read and
-- rewritten in the binary format when next written (the `.s` field is then
-- deleted). A bucket of the oldest format keeps its points and gains a
-- sketch of the new ones only: its sketch then counts fewer points than the
-- bucket, which readers report as "no percentiles".
--
-- A container's expire-at depends only on the container (its end +
-- retention), so it is set when the script creates a field of it; a
-- container never exists without its expiry, as every write of every
-- format set it.
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
-- A bucket's sketch is collapsed when it holds more than MAX_BINS bins,
-- each store to its MAX_STORE_BINS highest bins.
local MAX_BINS = 4096
local MAX_STORE_BINS = 2048
-- The key of bin 0 of the positive store, less one (see above).
local KEY_BASE = 40001
-- The header: tag, width, count, sum, comp, min, max.
local HEAD = '<BBI6dddd'
local COUNT_FMT = { [1] = 'B', [2] = 'H', [4] = 'I4', [6] = 'I6' }
local COUNT_MAX = { [1] = 255, [2] = 65535, [4] = 4294967295, [6] = 281474976710655 }
-- Values per struct.pack/unpack call (well within Lua's C stack).
local CHUNK = 1000

local DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

-- The bucket being updated. A binary bucket keeps its bins' bytes (body)
-- until written.
local function load(stored, value)
  if not stored then
    return { count = 0, sum = 0, comp = 0, min = value, max = value, values = {} }
  end
  local tag = string.byte(stored, 1)
  if tag < 48 then
    local _, w, c, sm, k, mn, mx, from = struct.unpack(HEAD, stored)
    local b = { count = c, sum = sm, comp = k, min = mn, max = mx, w = w,
                dense = tag % 4 == 2, values = {} }
    if tag >= 4 then
      local pf, nf
      pf, nf, from = struct.unpack('<i4i4', stored, from)
      if pf ~= 0 then b.pf = pf end
      if nf ~= 0 then b.nf = nf end
    end
    b.body = string.sub(stored, from)
    return b
  end
  local c, sm, k, mn, mx, sbins, _, floors, from =
    string.match(stored, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%d+) (%d+)([^|]*)|()')
  if not c then
    -- The format before sketches: its points are not in the sketch.
    c, sm, mn, mx = string.match(stored, '^(%S+) (%S+) (%S+) (%S+)$')
    return { count = tonumber(c), sum = tonumber(sm), comp = 0,
             min = tonumber(mn), max = tonumber(mx), text = '', sbins = 0, values = {} }
  end
  local b = { count = tonumber(c), sum = tonumber(sm), comp = tonumber(k),
              min = tonumber(mn), max = tonumber(mx), text = string.sub(stored, from),
              sbins = tonumber(sbins), values = {} }
  if floors ~= '' then
    local pf, nf = string.match(floors, '^ (%S+) (%S+)$')
    if tonumber(pf) then b.pf = tonumber(pf) + KEY_BASE end
    if tonumber(nf) then b.nf = -(tonumber(nf) + KEY_BASE) end
  end
  return b
end

-- The key a value's key is counted under in bucket b: a bin below the floor
-- of a collapsed store is that floor's bin.
local function floored(key, b)
  if key > 0 then
    if b.pf and key < b.pf then return b.pf end
  elseif key < 0 then
    if b.nf and key > b.nf then return b.nf end
  end
  return key
end

-- struct formats of n repetitions, memoised for the call.
local formats = {}
local function repeated(item, n)
  local id = item .. n
  local f = formats[id]
  if not f then
    f = '<' .. string.rep(item, n)
    formats[id] = f
  end
  return f
end

-- The bins of a text bucket (tokens " <base-62 key>[:<count>]", '~' in
-- front for the negative store, '.' for zero) added to t.
local function parse_tokens(t, text)
  for key, n in string.gmatch(text, ' ([^ :]+):?(%d*)') do
    local k = 0
    if key ~= '.' then
      local negative = string.sub(key, 1, 1) == '~'
      if negative then key = string.sub(key, 2) end
      local sign = 1
      if string.sub(key, 1, 1) == '-' then sign, key = -1, string.sub(key, 2) end
      local i = 0
      for j = 1, #key do i = i * 62 + string.find(DIGITS, string.sub(key, j, j), 1, true) - 1 end
      k = sign * i + KEY_BASE
      if negative then k = -k end
    end
    t[k] = (t[k] or 0) + (n == '' and 1 or tonumber(n))
  end
end

-- All bins of bucket b, key -> count.
local function decode(b, key_name, field)
  local t = {}
  if b.text then
    parse_tokens(t, b.text)
    if b.sbins > 0 then
      parse_tokens(t, redis.call('HGET', key_name, field .. '.s') or '')
    end
    return t
  end
  local body = b.body
  if not body then return t end
  local w = b.w
  local count = COUNT_FMT[w]
  if b.dense then
    local first = struct.unpack('<i3', body)
    local n = (#body - 3) / w
    local done = 0
    while done < n do
      local m = math.min(CHUNK, n - done)
      local counts = { struct.unpack(repeated(count, m), body, 4 + done * w) }
      for j = 1, m do
        local c = counts[j]
        if c > 0 then t[first + done + j - 1] = c end
      end
      done = done + m
    end
  else
    local size = 3 + w
    local n = #body / size
    local done = 0
    while done < n do
      local m = math.min(CHUNK, n - done)
      local pairs_ = { struct.unpack(repeated('i3' .. count, m), body, 1 + done * size) }
      for j = 1, 2 * m, 2 do t[pairs_[j]] = pairs_[j + 1] end
      done = done + m
    end
  end
  return t
end

-- Collapses each store of t holding more than MAX_STORE_BINS bins into its
-- MAX_STORE_BINS highest (by magnitude), the lowest of which absorbs the
-- rest and becomes the store's floor.
local function collapse(t, b)
  local pos, neg = {}, {}
  for k in pairs(t) do
    if k > 0 then pos[#pos + 1] = k elseif k < 0 then neg[#neg + 1] = k end
  end
  local function one(keys, field, higher)
    if #keys <= MAX_STORE_BINS then return end
    table.sort(keys, higher)
    local floor_key = keys[MAX_STORE_BINS]
    for j = MAX_STORE_BINS + 1, #keys do
      local k = keys[j]
      t[floor_key] = t[floor_key] + t[k]
      t[k] = nil
    end
    b[field] = floor_key
  end
  one(pos, 'pf', function(x, y) return x > y end)
  one(neg, 'nf', function(x, y) return x < y end)
end

-- The header of bucket b (with its floors), for counts of width w and the
-- layout tag (1 sparse, 2 dense).
local function header(b, tag, w)
  if b.pf or b.nf then
    return struct.pack(HEAD, tag + 4, w, b.count, b.sum, b.comp, b.min, b.max)
      .. struct.pack('<i4i4', b.pf or 0, b.nf or 0)
  end
  return struct.pack(HEAD, tag, w, b.count, b.sum, b.comp, b.min, b.max)
end

-- Bucket b with the bins t, in the shorter layout.
local function encode(b, t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  if #keys > MAX_BINS then
    collapse(t, b)
    keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
  end
  table.sort(keys)
  local n = #keys
  local most = 0
  for j = 1, n do
    local c = t[keys[j]]
    if c > most then most = c end
  end
  local w = (most <= 255 and 1) or (most <= 65535 and 2) or (most <= 4294967295 and 4) or 6
  local count = COUNT_FMT[w]
  local parts = {}
  local dense = n > 0 and 3 + (keys[n] - keys[1] + 1) * w < n * (3 + w)
  if dense then
    parts[1] = header(b, 2, w)
    parts[2] = struct.pack('<i3', keys[1])
    local first, last = keys[1], keys[n]
    local k = first
    while k <= last do
      local m = math.min(CHUNK, last - k + 1)
      local counts = {}
      for j = 1, m do counts[j] = t[k + j - 1] or 0 end
      parts[#parts + 1] = struct.pack(repeated(count, m), unpack(counts, 1, m))
      k = k + m
    end
  else
    parts[1] = header(b, 1, w)
    local done = 0
    while done < n do
      local m = math.min(CHUNK / 2, n - done)
      local flat = {}
      for j = 1, m do
        local k = keys[done + j]
        flat[2 * j - 1] = k
        flat[2 * j] = t[k]
      end
      parts[#parts + 1] = struct.pack(repeated('i3' .. count, m), unpack(flat, 1, 2 * m))
      done = done + m
    end
  end
  return table.concat(parts)
end

-- Adds one value of key k to the body of binary bucket b in place; false
-- when that needs the whole bucket encoded again (the count would pass the
-- width, the key lies outside the dense run, or the sparse pairs would
-- outgrow the dense layout or MAX_BINS).
local function patch(b, k)
  local body, w = b.body, b.w
  local count = '<' .. COUNT_FMT[w]
  if b.dense then
    local first = struct.unpack('<i3', body)
    local j = k - first
    if j < 0 or j >= (#body - 3) / w then return false end
    local at = 4 + j * w
    local c = struct.unpack(count, body, at)
    if c >= COUNT_MAX[w] then return false end
    b.body = string.sub(body, 1, at - 1) .. struct.pack(count, c + 1) .. string.sub(body, at + w)
    return true
  end
  local size = 3 + w
  local n = #body / size
  local lo, hi = 0, n - 1
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local at = 1 + mid * size
    local key = struct.unpack('<i3', body, at)
    if key == k then
      local c = struct.unpack(count, body, at + 3)
      if c >= COUNT_MAX[w] then return false end
      b.body = string.sub(body, 1, at + 2) .. struct.pack(count, c + 1) .. string.sub(body, at + size)
      return true
    elseif key < k then
      lo = mid + 1
    else
      hi = mid - 1
    end
  end
  if n + 1 > MAX_BINS then return false end
  if n > 0 then
    local first = math.min(k, (struct.unpack('<i3', body)))
    local last = math.max(k, (struct.unpack('<i3', body, 1 + (n - 1) * size)))
    if 3 + (last - first + 1) * w < (n + 1) * size then return false end
  end
  local at = 1 + lo * size
  b.body = string.sub(body, 1, at - 1) .. struct.pack('<i3' .. COUNT_FMT[w], k, 1) .. string.sub(body, at)
  return true
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
      if value < b.min then b.min = value end
      if value > b.max then b.max = value end
      b.values[#b.values + 1] = tonumber(ARGV[at + 4])
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
  if b.body then
    -- A binary bucket: patch a few values in place (a single ingest: one).
    local nv = #values
    if nv <= 2 or nv * 4 <= #b.body / (3 + b.w) then
      local j = 1
      while j <= nv and patch(b, floored(values[j], b)) do j = j + 1 end
      if j > nv then
        text = header(b, b.dense and 2 or 1, b.w) .. b.body
      else
        local t = decode(b)
        for i = j, nv do
          local k = floored(values[i], b)
          t[k] = (t[k] or 0) + 1
        end
        text = encode(b, t)
      end
    end
  end
  if not text then
    local t = decode(b, key_name, field)
    for _, v in ipairs(values) do
      local k = floored(v, b)
      t[k] = (t[k] or 0) + 1
    end
    text = encode(b, t)
    if b.text and b.sbins > 0 then redis.call('HDEL', key_name, field .. '.s') end
  end
  if redis.call('HSET', key_name, field, text) == 1 and not expiring[u[1]] then
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
