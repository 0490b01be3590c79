-- Take a slot for ARGV[3] (holder/waiter id) with a lease of ARGV[4] ms, info JSON ARGV[5].
-- Returns {1, fence, granted_at, epoch, expires_at, handoff_ms} (handoff_ms: since the event that
-- freed the slot woke this waiter, -1 if it was not woken) or
-- {0, rank, free, recovery_ms_left}.
-- FIFO: a caller is admitted only if its rank among live waiters is below the free slots. For
-- one lease after a state loss there are no free slots (the holders still running re-register
-- through their renewals first); the reply says when that ends, and waiters re-check then.
local id, lease_ms = ARGV[3], tonumber(ARGV[4])
local rec = cjson.decode(ARGV[5])
local L = limits(false)
local ep = sync_epoch(L)
local pruned = prune_holders() + prune_waiters()
if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over

-- A retried call whose first reply was lost: hand back the same grant.
if redis.call('ZSCORE', K_HOLDERS, id) then
  if pruned > 0 then wake(L.concurrency_limit) end
  local cur = decode_info(id) or {}
  return reply({1, tonumber(cur.fence or 0), cur.acquired_at or fmt(NOW), cur.epoch or ep,
                redis.call('ZSCORE', K_HOLDERS, id), -1})
end

local recovering = recovery_ms_left()
local free = L.concurrency_limit - redis.call('ZCARD', K_HOLDERS)
if recovering > 0 then free = 0 end
local rank = redis.call('ZRANK', K_WAITERS, id)
if not rank then
  rank = redis.call('ZCARD', K_WAITERS)
  if rank >= free then
    redis.call('ZADD', K_WAITERS, redis.call('INCR', K_TICKET), id)
  end
end

if rank < free then
  redis.call('ZREM', K_WAITERS, id)
  redis.call('ZREM', K_WAITER_EXP, id)
  local woken = redis.call('HGET', K_WOKEN, id)
  redis.call('HDEL', K_WOKEN, id)
  local fence = next_fence()
  rec.fence = string.format('%.0f', fence)
  rec.acquired_at = fmt(NOW)
  rec.epoch = ep
  save_holder(id, rec)
  local expires = fmt(NOW + lease_ms)
  redis.call('ZADD', K_HOLDERS, expires, id)
  if pruned > 0 then wake(L.concurrency_limit) end
  local handoff = woken and fmt(NOW - tonumber(woken)) or -1
  return reply({1, fence, fmt(NOW), ep, expires, handoff})
end

-- Not admitted: a wake that brought it here is spent (the next one measures afresh).
redis.call('HDEL', K_WOKEN, id)
redis.call('ZADD', K_WAITER_EXP, fmt(NOW + CFG.waiter_ttl_ms), id)
if pruned > 0 then wake(L.concurrency_limit) end
return reply({0, rank, free, fmt(recovering)})
