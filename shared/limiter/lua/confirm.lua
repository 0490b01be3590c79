-- After sleeping until a reserved grant time: does the reservation still stand? ARGV[3] kind
-- ('create' or 'read'), ARGV[4] grant id. A pause that began meanwhile (a 429 seen by any worker,
-- a state loss) cancels a creation's reservation; a limit change may have moved it later.
-- Returns {1} (go), {2, wait_ms, at_ms} (moved later: sleep again), or {0, wait_ms} (gone:
-- take a new token, after wait_ms if paused).
local kind, member = ARGV[3], ARGV[4]
local log = RATE_LOG[kind]
if not log then fail('unknown token kind ' .. tostring(kind)) end
local L = limits(false)
sync_epoch(L)
if kind == 'create' then
  local p = redis.call('HGET', K_PAUSE, 'until')
  if p and tonumber(p) > NOW then
    redis.call('ZREM', log, member)
    return reply({0, fmt(tonumber(p) - NOW)})
  end
end
local at = redis.call('ZSCORE', log, member)
if not at then return reply({0, 0}) end
if tonumber(at) > NOW then return reply({2, fmt(tonumber(at) - NOW), at}) end
return reply({1})
