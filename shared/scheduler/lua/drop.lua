-- Forget every send held for batch ARGV[2] (it was canceled): its line, its delayed sends and
-- its place in the round robin. Returns how many sends were dropped.
local b = ARGV[2]
local indexes = redis.call('HKEYS', k_entry(b))
for _, i in ipairs(indexes) do
  redis.call('ZREM', K_DUE, b .. ':' .. i)
end
redis.call('DEL', k_entry(b), k_ready(b))
for k = 0, RANKS - 1 do redis.call('ZREM', k_turns(k), b) end
return #indexes
