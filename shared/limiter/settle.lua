-- A prediction (ARGV[2]) is known to be over (terminal, or canceled by us): free the slot still
-- counted for it, if its holder died or was cut off. Returns 1 if a slot was freed, else 0.
local L = limits(false)
local pruned = prune_holders() + prune_waiters()
local holder = holder_of_prediction(ARGV[2])
if holder then
  redis.call('ZREM', K_HOLDERS, holder)
  redis.call('HDEL', K_INFO, holder)
end
if holder or pruned > 0 then wake(L.concurrency) end
return holder and 1 or 0
