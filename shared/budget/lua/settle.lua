-- Settle the reservation of attempt ARGV[1]: it cost ARGV[2] micro-USD ('' = what was
-- reserved; '0' = nothing was created: the reservation is released). Spent counts on the day and
-- batch the reservation was made for. Returns {1, amount reserved, cost} or {0} when the attempt
-- holds no reservation (settled already, or none was made).
local marker, cost_arg = ARGV[1], ARGV[2] or ''
if marker == nil or marker == '' then budget_fail('settle needs an attempt marker') end
local cost = nil
if cost_arg ~= '' then cost = micro(cost_arg, 'cost') end
local rec = redis.call('HGET', KB_RES, marker)
if not rec then return {0} end
local amount, day, batch = string.match(rec, '^(%d+) (%d+) (.+)$')
amount = tonumber(amount)
if cost == nil then cost = amount end
redis.call('HDEL', KB_RES, marker)
redis.call('HINCRBY', KB_STATE, 'reserved:d:' .. day, string.format('%d', -amount))
redis.call('HINCRBY', KB_STATE, 'reserved:b:' .. batch, string.format('%d', -amount))
if cost > 0 then
  redis.call('HINCRBY', KB_STATE, 'spent:d:' .. day, string.format('%d', cost))
  redis.call('HINCRBY', KB_STATE, 'spent:b:' .. batch, string.format('%d', cost))
end
return {1, string.format('%d', amount), string.format('%d', cost)}
