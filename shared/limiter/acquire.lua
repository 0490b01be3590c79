-- Take a slot for ARGV[2] (holder/waiter id) with a lease of ARGV[3] ms, info JSON ARGV[4].
-- Returns {1, fence, granted_at, epoch, expires_at} or {0, rank, free, ms_to_earliest_expiry}.
-- FIFO: a caller is admitted only if its rank among live waiters is below the free slots.
local id, lease_ms, info = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local L = limits(false)
local pruned = prune_holders() + prune_waiters()
local ep = epoch()

-- A retried call whose first reply was lost: hand back the same grant.
if redis.call('ZSCORE', K_HOLDERS, id) then
  local cur = cjson.decode(redis.call('HGET', K_INFO, id) or '{}')
  return {1, tonumber(cur.fence or 0), cur.acquired_at or fmt(NOW), cur.epoch or ep,
          redis.call('ZSCORE', K_HOLDERS, id)}
end

local free = L.concurrency - redis.call('ZCARD', K_HOLDERS)
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
  local fence = next_fence()
  local rec = cjson.decode(info)
  rec.fence = string.format('%.0f', fence)
  rec.acquired_at = fmt(NOW)
  rec.epoch = ep
  save_holder(id, rec)
  local expires = fmt(NOW + lease_ms)
  redis.call('ZADD', K_HOLDERS, expires, id)
  if pruned > 0 then wake(L.concurrency) end
  return {1, fence, fmt(NOW), ep, expires}
end

redis.call('ZADD', K_WAITER_EXP, fmt(NOW + CFG.wt), id)
if pruned > 0 then wake(L.concurrency) end
return {0, rank, free, fmt(ms_to_earliest_expiry())}
