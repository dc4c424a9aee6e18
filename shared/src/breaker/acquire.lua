-- Circuit breaker admission: may one call to the guarded dependency go ahead?
-- Runs before every call; decides the open -> half_open transition and hands
-- out the half-open probe slots, so no two instances can both take the last slot.
--
-- KEYS[1]  the breaker hash ({prefix}:cb:{<dependency>})
-- ARGV[1]  reset timeout, ms: how long the breaker stays open before probing
-- ARGV[2]  half-open probe limit: probes admitted in total, across all
--          instances, per half-open generation (>= 1)
-- ARGV[3]  probe lease, ms: when every probe slot is taken and this long has
--          passed since the last probe was admitted without any report, the
--          probes are presumed lost (instance frozen or killed)
-- ARGV[4]  key TTL, s (refreshed on every write)
--
-- Hash fields (an absent key or field means: closed, generation 0, no failures):
--   state        "closed" | "open" | "half_open"
--   gen          generation, incremented on every transition
--   failures     consecutive failures counted while closed
--   opened_at    ms since the Unix epoch (Redis clock) of the last transition to open
--   probes       probes admitted in the current half-open generation
--   lease_until  ms (Redis clock) after which exhausted probes are presumed lost
--   last_failure "upstream_error" | "timeout": the failure that last opened it
--
-- Returns an array (decoded by `AcquireReply` in breaker/mod.rs):
--   [1] allowed   1 | 0
--   [2] state     the state the call is admitted (or rejected) under
--   [3] gen       the generation the call is admitted under (goes into the permit)
--   [4] is_probe  1 | 0
--   [5] from      state before the transition this call made, "" if none
--   [6] to        state after that transition, "" if none
--   [7] reason    "reset_timeout_elapsed" | "probe_lease_expired" | ""

-- Scripts that read TIME and then write must be replicated by effects; this
-- is the default from Redis 5 on and a no-op there.
if redis.replicate_commands then
  redis.replicate_commands()
end

local key = KEYS[1]
local reset_ms = tonumber(ARGV[1])
local max_probes = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local ttl_s = tonumber(ARGV[4])

local fields = redis.call('HMGET', key, 'state', 'gen', 'opened_at', 'probes', 'lease_until')
local state = fields[1]
local gen = tonumber(fields[2]) or 0

-- Anything but open or half_open (including a missing key) is closed: the hot
-- path reads one hash and writes nothing.
if state ~= 'open' and state ~= 'half_open' then
  return {1, 'closed', gen, 0, '', '', ''}
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local probes = 0
local from, to, reason = '', '', ''

if state == 'open' then
  local opened_at = tonumber(fields[3]) or 0
  if now < opened_at + reset_ms then
    return {0, 'open', gen, 0, '', '', ''}
  end
  -- A new generation: results of calls admitted before (there are none while
  -- open, but there may be late ones from the closed state) can no longer
  -- move the breaker.
  gen = gen + 1
  from, to, reason = 'open', 'half_open', 'reset_timeout_elapsed'
else
  probes = tonumber(fields[4]) or 0
  if probes >= max_probes then
    local lease_until = tonumber(fields[5]) or 0
    if now < lease_until then
      return {0, 'half_open', gen, 0, '', '', ''}
    end
    -- Every probe slot is taken and none reported within the lease: their
    -- instances died or froze. Start a new round of probes under a new
    -- generation so that a very late report from a lost probe is ignored.
    gen = gen + 1
    probes = 0
    from, to, reason = 'half_open', 'half_open', 'probe_lease_expired'
  end
end

probes = probes + 1
redis.call('HSET', key, 'state', 'half_open', 'gen', gen, 'probes', probes,
  'lease_until', now + lease_ms)
redis.call('EXPIRE', key, ttl_s)
return {1, 'half_open', gen, 1, from, to, reason}
