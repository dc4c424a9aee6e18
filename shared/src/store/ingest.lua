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
-- ARGV[3..5]  only when r > 0 (each argument costs Redis and this script a
--             few hundred instructions, so a call without records omits
--             them): the fingerprint of the whole request (hex SHA-256 of its
--             canonical metrics), the 201 body to remember for replays and
--             the TTL of the records, s
-- ARGV[a]     p, the number of parts (a part: the metrics one record
--             covers); a = 6 when r > 0, else 3
-- ARGV[a+1..a+p] the number of metrics of each part, in order
-- ARGV[...]   the expire-at of each container, in the order of KEYS (unix
--             s: the container's end + retention, so storage stays bounded)
-- ARGV[...]   the metrics, part after part, each as its value (a finite
--             float as text), its sketch key (below; computed by the caller,
--             `sketch::bin_key` in store/sketch.rs, so that the script takes
--             no logarithm), n (the number of its buckets) and n updates of
--             its buckets in pairs: key index (1-based into KEYS) and field
--             (bucket start, unix s). A value and its key, the same in all
--             the metric's buckets, are sent and parsed once.
--
-- Updates are numbered from 0 over the whole call, in this order (metric
-- after metric, the buckets of each in order), as "overflow" reports them.
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
--
-- What a call costs (Redis runs the whole chunk on every call, and this
-- Lua spends hundreds of instructions on each C function call, table,
-- closure or number parsed from text): the common case, one value per
-- bucket, runs inline on a small array per bucket and rewrites a binary
-- bucket with one `struct.pack` of the new header, the unchanged bytes
-- around the one count and that count; a metric's value and sketch key
-- are sent and parsed once for all its buckets. Everything else (text
-- formats, several values in a bucket, a patch that does not fit) goes
-- through the general code below, whose functions are only created when a
-- call needs them.

-- A bucket's sketch holds at most MAX_BINS bins (see `general` below).
local MAX_BINS = 4096
-- The header: tag, width, count, sum, comp, min, max; 40 bytes.
local HEAD = '<BBI6dddd'
local HEAD_SIZE = 40
local INF = math.huge

local argv, keys = ARGV, KEYS
-- Where this script's KEYS and ARGV start in the call's, less one: 0 when it
-- runs alone. A script holding it as a function (store/limited.rs) passes
-- both, so that it reads the call's own tables in place instead of copies.
local ko, ao = ...
ko, ao = ko or 0, ao or 0

-- The state of one bucket of the call, an array (cheaper to build than a
-- record) with these slots; its values' sketch keys follow slot NV.
local KI, FIELD, EXPIRE, STORED, COUNT, SUM, COMP, MIN, MAX, TAG, W, FROM, PF, NF, REC, NEXT, NV =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17
-- STORED  the value read (false when none)
-- TAG     the binary tag; 0 when none was stored, -1 for a text format
-- W       bytes per count (binary)
-- FROM    offset of the bins in STORED, after the header and floors (binary)
-- PF, NF  the floors (nil when unset)
-- REC     the bucket as `general().load_text` read it (text formats)
-- NEXT    the next bucket of the call with the same field (another container)
-- NV      the number of values added

-- The general code, built by `general()` on first need. It captures
-- nothing from the chunk (each captured local costs an allocation whenever
-- the closure is created, i.e. on every call), so it restates its constants.
local lib

local function general()
-- A bucket's sketch is collapsed when it holds more than MAX_BINS bins,
-- each store to its MAX_STORE_BINS highest bins.
local MAX_BINS = 4096
local MAX_STORE_BINS = 2048
-- The key of bin 0 of the positive store, less one (see above).
local KEY_BASE = 40001
local HEAD = '<BBI6dddd'
local COUNT_FMT = { [1] = 'B', [2] = 'H', [4] = 'I4', [6] = 'I6' }
local COUNT_MAX = { [1] = 255, [2] = 65535, [4] = 4294967295, [6] = 281474976710655 }
-- Values per struct.pack/unpack call (well within Lua's C stack).
local CHUNK = 1000

local DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

-- A bucket of a text format: its header values and where its bins are.
local function load_text(stored)
  local c, sm, k, mn, mx, sbins, _, floors, from =
    string.match(stored, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%d+) (%d+)([^|]*)|()')
  if not c then
    -- The format before sketches: its points are not in the sketch.
    c, sm, mn, mx = string.match(stored, '^(%S+) (%S+) (%S+) (%S+)$')
    return { count = tonumber(c), sum = tonumber(sm), comp = 0,
             min = tonumber(mn), max = tonumber(mx), text = '', sbins = 0 }
  end
  local b = { count = tonumber(c), sum = tonumber(sm), comp = tonumber(k),
              min = tonumber(mn), max = tonumber(mx), text = string.sub(stored, from),
              sbins = tonumber(sbins) }
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

-- The new value of bucket b (a record: count, sum, comp, min, max,
-- values, and the binary bucket's w, dense, body or the text bucket's text,
-- sbins, and the floors pf, nf); a text format's `.s` field is deleted.
local function rewrite(b, key_name, field)
  local values = b.values
  local text
  if b.body then
    -- A binary bucket: patch a few values in place.
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
  return text
end

return { load_text = load_text, rewrite = rewrite }
end

local check_only = argv[ao + 1] == 'check'
-- `+ 0` parses a number as tonumber() does, without a function call.
local r = argv[ao + 2] + 0
local fingerprint, reply_body, ttl
-- The index of p in argv.
local pa = ao + 3
if r > 0 then
  fingerprint, reply_body, ttl = argv[pa], argv[pa + 1], argv[pa + 2]
  pa = pa + 3
end
local p = argv[pa] + 0

local done = nil
if r > 0 then
  done = {}
  local replay_body = nil
  local fresh = 0
  for j = 1, r do
    local seen = redis.call('HMGET', keys[ko + j], 'fp', 'body')
    if seen[1] then
      if seen[1] ~= fingerprint then return { 'mismatch' } end
      done[j] = true
      if not replay_body then replay_body = seen[2] end
    else
      fresh = fresh + 1
    end
  end
  if fresh == 0 then return { 'replay', replay_body } end
end

-- The buckets of the call by field, chained through NEXT, and in the order
-- of their first update.
local buckets = {}
local order = {}
-- argv[ea + ki] is the expire-at of KEYS[ki] (a container).
local ea = pa + p - ko - r
local at = pa + p + (#keys - ko - r) + 1
local u = 0
for j = 1, p do
  local count = argv[pa + j] + 0
  if done and done[j] then
    for _ = 1, count do
      local n = argv[at + 2] + 0
      at = at + 3 + 2 * n
      u = u + n
    end
  else
    for _ = 1, count do
      local value, key, n = argv[at] + 0, argv[at + 1] + 0, argv[at + 2] + 0
      at = at + 3
      for _ = 1, n do
        local ki = argv[at] + ko
        local field = argv[at + 1]
        local b = buckets[field]
        while b and b[KI] ~= ki do b = b[NEXT] end
        if not b then
          local stored = redis.call('HGET', keys[ki], field)
          if not stored then
            b = { ki, field, argv[ea + ki], false, 0, 0, 0, value, value, 0, 0, 0, nil, nil, nil,
                  buckets[field], 0 }
          elseif string.byte(stored) < 48 then
            local tag, w, c, sm, k, mn, mx, from = struct.unpack(HEAD, stored)
            local pf, nf
            if tag >= 4 then
              pf, nf, from = struct.unpack('<i4i4', stored, from)
              if pf == 0 then pf = nil end
              if nf == 0 then nf = nil end
            end
            b = { ki, field, argv[ea + ki], stored, c, sm, k, mn, mx, tag, w, from, pf, nf, nil,
                  buckets[field], 0 }
          else
            lib = lib or general()
            local t = lib.load_text(stored)
            b = { ki, field, argv[ea + ki], stored, t.count, t.sum, t.comp, t.min, t.max, -1, 0, 0,
                  t.pf, t.nf, t, buckets[field], 0 }
          end
          buckets[field] = b
          order[#order + 1] = b
        end
        local sum = b[SUM]
        local t = sum + value
        if t ~= t or t == INF or t == -INF then
          return { 'overflow', u }
        end
        if (sum < 0 and -sum or sum) >= (value < 0 and -value or value) then
          b[COMP] = b[COMP] + ((sum - t) + value)
        else
          b[COMP] = b[COMP] + ((value - t) + sum)
        end
        b[SUM] = t
        b[COUNT] = b[COUNT] + 1
        if value < b[MIN] then b[MIN] = value end
        if value > b[MAX] then b[MAX] = value end
        local nv = b[NV] + 1
        b[NV] = nv
        b[NV + nv] = key
        at = at + 2
        u = u + 1
      end
    end
  end
end
if check_only then return { 'checked' } end

local expiring = nil
for j = 1, #order do
  local b = order[j]
  local key_name, field = keys[b[KI]], b[FIELD]
  local text
  local tag = b[TAG]
  if b[NV] == 1 and tag == 0 then
    -- A new bucket of one value: one sparse pair of count 1.
    text = struct.pack('<BBI6ddddi3B', 1, 1, 1, b[SUM], b[COMP], b[MIN], b[MAX], b[NV + 1], 1)
  elseif b[NV] == 1 and tag > 0 and (tag < 4 or b[PF] or b[NF]) then
    -- A binary bucket and one value: its count is patched in place, unless
    -- that needs the general code (the count would pass its width, the key
    -- lies outside the dense run, the sparse pairs would outgrow the dense
    -- layout or MAX_BINS, or a floor bit is set with no floor to keep). The
    -- new value is the new header, the bytes from its end to the count, the
    -- count and the rest, in one pack.
    repeat
      local k = b[NV + 1]
      if k > 0 then
        local pf = b[PF]
        if pf and k < pf then k = pf end
      elseif k < 0 then
        local nf = b[NF]
        if nf and k > nf then k = nf end
      end
      local stored, w, from = b[STORED], b[W], b[FROM]
      -- Formats by width: one count; a key and its count; the bucket with
      -- a count rewritten; the bucket with a (key, count) pair inserted.
      local count, pair, set, insert, most
      if w == 1 then
        count, pair, set, insert, most = '<B', '<i3B', '<BBI6ddddc0Bc0', '<BBI6ddddc0i3Bc0', 255
      elseif w == 2 then
        count, pair, set, insert, most = '<H', '<i3H', '<BBI6ddddc0Hc0', '<BBI6ddddc0i3Hc0', 65535
      elseif w == 4 then
        count, pair, set, insert, most =
          '<I4', '<i3I4', '<BBI6ddddc0I4c0', '<BBI6ddddc0i3I4c0', 4294967295
      else
        count, pair, set, insert, most =
          '<I6', '<i3I6', '<BBI6ddddc0I6c0', '<BBI6ddddc0i3I6c0', 281474976710655
      end
      local size = #stored - from + 1
      if tag % 4 == 2 then
        local first = struct.unpack('<i3', stored, from)
        local i = k - first
        if i < 0 or i >= (size - 3) / w then break end
        local at = from + 3 + i * w
        local c = struct.unpack(count, stored, at)
        if c >= most then break end
        text = struct.pack(set, tag, w, b[COUNT], b[SUM], b[COMP], b[MIN], b[MAX],
          string.sub(stored, HEAD_SIZE + 1, at - 1), c + 1, string.sub(stored, at + w))
        break
      end
      local step = 3 + w
      local n = size / step
      local lo, hi = 0, n - 1
      while lo <= hi do
        local mid = lo + hi
        mid = (mid - mid % 2) / 2
        local at = from + mid * step
        local key, c = struct.unpack(pair, stored, at)
        if key == k then
          if c < most then
            text = struct.pack(set, tag, w, b[COUNT], b[SUM], b[COMP], b[MIN], b[MAX],
              string.sub(stored, HEAD_SIZE + 1, at + 2), c + 1, string.sub(stored, at + step))
          end
          break
        elseif key < k then
          lo = mid + 1
        else
          hi = mid - 1
        end
      end
      if lo > hi and n + 1 <= MAX_BINS then
        local fits = true
        if n > 0 then
          local first = struct.unpack('<i3', stored, from)
          local last = struct.unpack('<i3', stored, from + (n - 1) * step)
          if k < first then first = k end
          if k > last then last = k end
          fits = 3 + (last - first + 1) * w >= (n + 1) * step
        end
        if fits then
          local at = from + lo * step
          text = struct.pack(insert, tag, w, b[COUNT], b[SUM], b[COMP], b[MIN], b[MAX],
            string.sub(stored, HEAD_SIZE + 1, at - 1), k, 1, string.sub(stored, at))
        end
      end
    until true
  end
  if not text then
    local values = {}
    for i = 1, b[NV] do values[i] = b[NV + i] end
    local rec = { count = b[COUNT], sum = b[SUM], comp = b[COMP], min = b[MIN], max = b[MAX],
                  values = values, pf = b[PF], nf = b[NF] }
    if tag > 0 then
      rec.w, rec.dense, rec.body = b[W], tag % 4 == 2, string.sub(b[STORED], b[FROM])
    elseif tag < 0 then
      rec.text, rec.sbins = b[REC].text, b[REC].sbins
    end
    lib = lib or general()
    text = lib.rewrite(rec, key_name, field)
  end
  if redis.call('HSET', key_name, field, text) == 1 then
    expiring = expiring or {}
    if not expiring[key_name] then
      redis.call('EXPIREAT', key_name, b[EXPIRE])
      expiring[key_name] = true
    end
  end
end
for j = 1, r do
  if not done[j] then
    redis.call('HSET', keys[ko + j], 'fp', fingerprint, 'body', reply_body)
    redis.call('EXPIRE', keys[ko + j], ttl)
  end
end
return { 'stored' }
