-- After sleeping until a reserved creation time: still allowed? A pause that began meanwhile
-- (a 429 seen by any worker) cancels the reservation. ARGV[2] grant id.
-- Returns {1} or {0, pause_ms_left}.
local p = redis.call('HGET', K_PAUSE, 'until')
if p and tonumber(p) > NOW then
  redis.call('ZREM', K_CREATES, ARGV[2])
  return {0, fmt(tonumber(p) - NOW)}
end
return {1}
