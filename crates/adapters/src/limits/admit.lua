-- Admits one request of one gateway key, or names the limit that refuses it,
-- in one atomic step: a refused request takes nothing.
--
-- The clock is Redis's own (TIME), so that every replica counts against the
-- same one; the GCRA is gcra.rs's, in microseconds (doubles hold them exactly).
--
-- KEYS[1] requests TAT, KEYS[2] tokens TAT (µs, strings),
-- KEYS[3] leases (ZSET: lease id -> expiry µs), KEYS[4] spend of the period (µ$),
-- KEYS[5] the lease's void marker (set by cancel.lua).
-- ARGV[1] rpm, ARGV[2] tpm (-1: none), ARGV[3] tokens to reserve,
-- ARGV[4] max parallel (-1: none), ARGV[5] lease id, ARGV[6] lease TTL µs,
-- ARGV[7] budget µ$ (-1: none), ARGV[8] µ$ to reserve,
-- ARGV[9] when the spend key expires (Unix s; 0: never).
-- Returns {admitted 1|0, refusing limit (1 requests, 2 tokens, 3 parallel,
-- 4 budget; 0 none), retry µs, now µs, requests TAT, tokens TAT, in flight, spent µ$},
-- or {-1} for a lease made void: its gateway gave up on this admission before
-- it ran (Redis answered too late), so it takes nothing.

if redis.call('EXISTS', KEYS[5]) == 1 then
  return {-1}
end

local WINDOW = 60000000
local MARGIN_MS = 1000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_parallel, lease, lease_ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local budget, reserve_usd, spend_expires = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

local function int(n)
  return string.format('%d', n)
end

local function read(key)
  local value = redis.call('GET', key)
  if value then
    return tonumber(value)
  end
  return 0
end

-- Gcra::admit: the new TAT, or nil and when to retry.
local function admit(tat, per_minute, cost)
  local emission = math.max(math.floor(WINDOW / math.max(per_minute, 1)), 1)
  local base = math.max(tat, now)
  local new_tat = base + cost * emission
  local allowed_until = now + WINDOW
  if new_tat <= allowed_until then
    return new_tat, 0
  elseif cost > per_minute then
    return nil, math.max(base - now, 1)
  end
  return nil, new_tat - allowed_until
end

-- A TAT key lives until its window is whole again: then its absence reads the same.
local function store_tat(key, tat)
  redis.call('SET', key, int(tat), 'PXAT', int(math.ceil(tat / 1000) + MARGIN_MS))
end

local requests_tat, tokens_tat = read(KEYS[1]), read(KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', int(now))
local in_flight = redis.call('ZCARD', KEYS[3])
local spent = 0
if budget >= 0 then
  spent = read(KEYS[4])
end

local function refuse(limit, retry)
  return {0, limit, retry, now, requests_tat, tokens_tat, in_flight, spent}
end

local new_requests_tat, new_tokens_tat, retry
if rpm >= 0 then
  new_requests_tat, retry = admit(requests_tat, rpm, 1)
  if not new_requests_tat then
    return refuse(1, retry)
  end
end
if tpm >= 0 then
  new_tokens_tat, retry = admit(tokens_tat, tpm, tokens)
  if not new_tokens_tat then
    return refuse(2, retry)
  end
end
if max_parallel >= 0 and in_flight >= max_parallel then
  return refuse(3, 0)
end
if budget >= 0 and spent >= budget then
  return refuse(4, 0)
end

if new_requests_tat and new_requests_tat > now then
  store_tat(KEYS[1], new_requests_tat)
  requests_tat = new_requests_tat
end
if new_tokens_tat and new_tokens_tat > now then
  store_tat(KEYS[2], new_tokens_tat)
  tokens_tat = new_tokens_tat
end
in_flight = in_flight + redis.call('ZADD', KEYS[3], int(now + lease_ttl), lease)
redis.call('PEXPIRE', KEYS[3], int(math.ceil(lease_ttl / 1000) + MARGIN_MS))
if budget >= 0 then
  spent = redis.call('INCRBY', KEYS[4], int(reserve_usd))
  if spend_expires > 0 then
    redis.call('EXPIREAT', KEYS[4], int(spend_expires))
  end
end
return {1, 0, 0, now, requests_tat, tokens_tat, in_flight, spent}
