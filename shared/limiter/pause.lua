-- Pause creations for ARGV[2] ms (Redis time), keeping a longer pause already set.
-- ARGV[3] reason. Returns {until_ms, now_ms}.
local ms, reason = tonumber(ARGV[2]), ARGV[3]
local untl = NOW + ms
local cur = redis.call('HGET', K_PAUSE, 'until')
if cur and tonumber(cur) > untl then
  untl = tonumber(cur)
else
  redis.call('HSET', K_PAUSE, 'until', fmt(untl), 'reason', reason, 'set_at', fmt(NOW))
end
redis.call('PEXPIRE', K_PAUSE, math.ceil(untl - NOW) + 60000)
return {fmt(untl), fmt(NOW)}
