-- Settles one admitted request: releases its lease, and gives back (or
-- charges) the difference between its reservation and its real use. A
-- request whose lease is gone (settled already, or expired with its replica)
-- changes nothing: settling twice is harmless.
--
-- KEYS[1] tokens TAT, KEYS[2] leases, KEYS[3] spend of the admission's period.
-- ARGV[1] lease id, ARGV[2] tpm (-1: none), ARGV[3] reserved tokens,
-- ARGV[4] used tokens, ARGV[5] 1 with a budget, ARGV[6] reserved µ$, ARGV[7] used µ$.
-- Returns 1 when settled, 0 when the lease was not held.

local WINDOW = 60000000
local MARGIN_MS = 1000

if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tpm, reserved, used = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local reserved_usd, used_usd = tonumber(ARGV[6]), tonumber(ARGV[7])

local function int(n)
  return string.format('%d', n)
end

if tpm >= 0 and used ~= reserved then
  local emission = math.max(math.floor(WINDOW / math.max(tpm, 1)), 1)
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if used < reserved then
    -- Gcra::refund: never earlier than an empty window.
    tat = math.max(tat - (reserved - used) * emission, now)
  else
    -- Gcra::charge: always taken, the window may run over.
    tat = math.max(tat, now) + (used - reserved) * emission
  end
  if tat > now then
    redis.call('SET', KEYS[1], int(tat), 'PXAT', int(math.ceil(tat / 1000) + MARGIN_MS))
  else
    redis.call('DEL', KEYS[1])
  end
end

if ARGV[5] == '1' and used_usd ~= reserved_usd then
  local spent = redis.call('GET', KEYS[3])
  -- A period whose key has expired is long over: nothing to correct.
  if spent then
    local corrected = math.max(tonumber(spent) + used_usd - reserved_usd, 0)
    redis.call('SET', KEYS[3], int(corrected), 'KEEPTTL')
  end
end
return 1
