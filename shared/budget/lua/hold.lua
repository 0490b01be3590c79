-- Item ARGV[2] of batch ARGV[1] waits for room: its attempt ARGV[3] needs ARGV[4] micro-USD and
-- did not fit limit ARGV[5] ('batch' | 'daily'). Replaces an earlier record of the item.
local batch, index, attempt, scope = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local amount = micro(ARGV[4], 'held amount')
if batch == '' or not string.match(index, '^%d+$') or not attempt then budget_fail('bad held item') end
if scope ~= 'batch' and scope ~= 'daily' then budget_fail('bad scope ' .. tostring(scope)) end
local t = budget_now_s()
redis.call('HSET', KB_HELD, batch .. ':' .. index, cjson.encode({a = amount, n = attempt, s = scope, t = t}))
return 1
