-- Release a holder, or withdraw a waiter (ARGV[3]); idempotent. Wakes whoever is next.
-- Returns {removed_holder (0/1), removed_waiter (0/1), now_ms}.
local id = ARGV[3]
local L = limits(false)
sync_epoch(L)
local pruned = prune()
if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over
local held = remove_holders({id})
local waited = 0
if held == 0 then  -- a holder is no waiter: its grant took it out of the line (acquire.lua)
  waited = redis.call('ZREM', K_WAITERS, id)
  redis.call('ZREM', K_WAITER_EXP, id)
  redis.call('HDEL', K_WOKEN, id)
end
if held + waited + pruned > 0 then wake(L.concurrency_limit) end
return reply({held, waited, fmt(NOW)})
