-- Reads where one gateway key stands, changing nothing.
--
-- KEYS[1] requests TAT, KEYS[2] tokens TAT, KEYS[3] leases, KEYS[4] spend of the period.
-- Returns {now µs, requests TAT, tokens TAT, in flight, spent µ$}.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local in_flight = redis.call('ZCOUNT', KEYS[3], '(' .. string.format('%d', now), '+inf')
return {
  now,
  tonumber(redis.call('GET', KEYS[1]) or '0'),
  tonumber(redis.call('GET', KEYS[2]) or '0'),
  in_flight,
  tonumber(redis.call('GET', KEYS[4]) or '0'),
}
