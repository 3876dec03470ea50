-- Cancels an admission its gateway gave up on (no answer within the
-- deadline, or the request went away), whether admit.lua has run for it or
-- not. Both scripts are atomic, so one of two orders holds:
-- - admit.lua ran: the lease is in the set. It is removed and all the
--   admission took is given back (the request, the tokens and the µ$
--   reserved), as settle.lua would with nothing used, the request refunded
--   too. A lease already expired and swept is not found: its reservation
--   stands, as with a replica that died.
-- - admit.lua has not run (it may still be on its way): the lease is marked
--   void, and admit.lua takes nothing for a void lease.
--
-- KEYS[1] requests TAT, KEYS[2] tokens TAT, KEYS[3] leases,
-- KEYS[4] spend of the admission's period, KEYS[5] the lease's void marker.
-- ARGV[1] lease id, ARGV[2] rpm (-1: none), ARGV[3] tpm (-1: none),
-- ARGV[4] reserved tokens, ARGV[5] 1 with a budget, ARGV[6] reserved µ$,
-- ARGV[7] how long the void marker lives, ms.
-- Returns 1 when an admission was undone, 0 when the lease was marked void.

local WINDOW = 60000000
local MARGIN_MS = 1000

if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[7])
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local function int(n)
  return string.format('%d', n)
end

-- Gcra::refund: never earlier than an empty window.
local function refund(key, per_minute, units)
  if per_minute < 0 or units <= 0 then
    return
  end
  local emission = math.max(math.floor(WINDOW / math.max(per_minute, 1)), 1)
  local tat = math.max(tonumber(redis.call('GET', key) or '0') - units * emission, now)
  if tat > now then
    redis.call('SET', key, int(tat), 'PXAT', int(math.ceil(tat / 1000) + MARGIN_MS))
  else
    redis.call('DEL', key)
  end
end

refund(KEYS[1], tonumber(ARGV[2]), 1)
refund(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))

local reserved_usd = tonumber(ARGV[6])
if ARGV[5] == '1' and reserved_usd > 0 then
  local spent = redis.call('GET', KEYS[4])
  -- A period whose key has expired is long over: nothing to give back.
  if spent then
    redis.call('SET', KEYS[4], int(math.max(tonumber(spent) - reserved_usd, 0)), 'KEEPTTL')
  end
end
return 1
