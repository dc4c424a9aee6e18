-- Circuit breaker report: the outcome of one call admitted by acquire.lua.
-- Decides closed -> open (failure threshold), half_open -> closed (probe
-- succeeded) and half_open -> open (probe failed).
--
-- KEYS[1]  the breaker hash ({prefix}:cb:{<dependency>}); fields as in acquire.lua
-- ARGV[1]  generation the call was admitted under (from its permit)
-- ARGV[2]  outcome: "success" | "upstream_error" | "timeout"
-- ARGV[3]  failure threshold: consecutive failures that open a closed breaker (>= 1)
-- ARGV[4]  key TTL, s (refreshed on every write)
--
-- Returns an array (decoded by `ReportOutcome` in breaker/mod.rs):
--   [1] applied  1 if the report counted, 0 if it was ignored (admitted under
--                another generation, or the breaker is open)
--   [2] state    the state after the report
--   [3] gen      the generation after the report
--   [4] from     state before the transition this report made, "" if none
--   [5] to       state after that transition, "" if none
--   [6] reason   "failure_threshold_reached" | "probe_succeeded" | "probe_failed" | ""

-- Scripts that read TIME and then write must be replicated by effects; this
-- is the default from Redis 5 on and a no-op there.
if redis.replicate_commands then
  redis.replicate_commands()
end

local key = KEYS[1]
local permit_gen = tonumber(ARGV[1])
local outcome = ARGV[2]
local threshold = tonumber(ARGV[3])
local ttl_s = tonumber(ARGV[4])

local fields = redis.call('HMGET', key, 'state', 'gen', 'failures')
local state = fields[1]
if state ~= 'open' and state ~= 'half_open' then
  state = 'closed'
end
local gen = tonumber(fields[2]) or 0

-- A result from a call admitted under an earlier generation describes a state
-- that no longer exists. While open nothing is admitted, so a report is late
-- by definition; ignoring it keeps opened_at (and so the recovery time) fixed.
if permit_gen ~= gen or state == 'open' then
  return {0, state, gen, '', '', ''}
end

local success = outcome == 'success'

if state == 'closed' then
  local failures = tonumber(fields[3]) or 0
  if success then
    if failures > 0 then
      redis.call('HSET', key, 'failures', 0)
      redis.call('EXPIRE', key, ttl_s)
    end
    return {1, 'closed', gen, '', '', ''}
  end
  failures = failures + 1
  if failures < threshold then
    redis.call('HSET', key, 'state', 'closed', 'gen', gen, 'failures', failures)
    redis.call('EXPIRE', key, ttl_s)
    return {1, 'closed', gen, '', '', ''}
  end
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  gen = gen + 1
  redis.call('HSET', key, 'state', 'open', 'gen', gen, 'failures', 0, 'opened_at', now,
    'probes', 0, 'last_failure', outcome)
  redis.call('EXPIRE', key, ttl_s)
  return {1, 'open', gen, 'closed', 'open', 'failure_threshold_reached'}
end

-- half_open: only probes are admitted under this generation, and the first
-- probe result decides.
gen = gen + 1
if success then
  redis.call('HSET', key, 'state', 'closed', 'gen', gen, 'failures', 0, 'probes', 0)
  redis.call('EXPIRE', key, ttl_s)
  return {1, 'closed', gen, 'half_open', 'closed', 'probe_succeeded'}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', key, 'state', 'open', 'gen', gen, 'failures', 0, 'opened_at', now,
  'probes', 0, 'last_failure', outcome)
redis.call('EXPIRE', key, ttl_s)
return {1, 'open', gen, 'half_open', 'open', 'probe_failed'}
