-- Release a holder, or withdraw a waiter (ARGV[2]); idempotent. Wakes whoever is next.
-- Returns {removed_holder (0/1), removed_waiter (0/1), now_ms}.
local id = ARGV[2]
local L = limits(false)
local pruned = prune_holders() + prune_waiters()
local held = remove_holders({id})
local waited = redis.call('ZREM', K_WAITERS, id)
redis.call('ZREM', K_WAITER_EXP, id)
if held + waited + pruned > 0 then wake(L.concurrency) end
return {held, waited, fmt(NOW)}
