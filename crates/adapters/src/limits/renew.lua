-- Renews the leases this replica holds, so that a request longer than the
-- lease TTL keeps its slot; a lease already gone (expired, settled) is not
-- brought back.
--
-- KEYS: the leases ZSETs of the keys with leases here.
-- ARGV[1] lease TTL µs; then for each key in turn: how many leases, the leases.
-- Returns how many leases were renewed.

local MARGIN_MS = 1000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local ttl = tonumber(ARGV[1])
local expiry = string.format('%d', now + ttl)
local at, renewed = 2, 0
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, count do
    renewed = renewed + redis.call('ZADD', key, 'XX', 'CH', expiry, ARGV[at])
    at = at + 1
  end
  redis.call('PEXPIRE', key, string.format('%d', math.ceil(ttl / 1000) + MARGIN_MS))
end
return renewed
