-- Take a slot for ARGV[3] (holder/waiter id) with a lease of ARGV[4] ms, info JSON ARGV[5].
-- Returns {1, fence, granted_at, epoch, expires_at, handoff_ms} (handoff_ms: since the event that
-- freed the slot woke this waiter, -1 if it was not woken) or
-- {0, rank, free, recovery_ms_left}. A queued caller's record is kept with it (in info), so a
-- release can grant it the slot directly (common.lua wake()): it then never calls again.
-- A caller is admitted only if its rank among live waiters is below the free slots. The line is
-- ordered by priority (rec.priority: high, normal, low), then fairly among batches (rec.batch_id)
-- of one priority, then by arrival: each waiter gets a start tag one past the later of its
-- batch's last tag and the tag served last (start-time fair queuing), so a batch that arrives
-- while another has a long line is served alternately with it instead of behind it. Callers of
-- one batch (or without one) keep arrival order: plain FIFO. For one lease after a state loss
-- there are no free slots (the holders still running re-register through their renewals first);
-- the reply says when that ends, and waiters re-check then.
local id, lease_ms = ARGV[3], tonumber(ARGV[4])
local rec = cjson.decode(ARGV[5])
local BANDS = {high = 0, normal = 1, low = 2}
local band = BANDS[rec.priority] or 1
local flow = type(rec.batch_id) == 'string' and rec.batch_id or ''

-- The new waiter's place: (band, tag, arrival) in one score, exact in a double while tags stay
-- below 1e9 (they restart from 0 whenever the line is empty).
local function place()
  local tags = redis.call('HMGET', K_FAIR, 'vt:' .. band, 'f:' .. band .. ':' .. flow)
  local tag = math.max(tonumber(tags[1] or '0'), tonumber(tags[2] or '0')) + 1
  redis.call('HSET', K_FAIR, 'f:' .. band .. ':' .. flow, tag)
  local ticket = redis.call('INCR', K_TICKET)
  return string.format('%.0f', ((band * 1e9) + tag) * 1e6 + (ticket % 1000000))
end

local L = limits(false)
local ep = sync_epoch(L)
local pruned = prune()
if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over

-- A retried call whose first reply was lost, or a waiter that a release handed the slot to
-- (wake()) before its wake token reached it: hand back the same grant, its lease a full one from
-- now (the caller's lease counts from its call; a handed-over slot had a short one).
local held_until = redis.call('ZSCORE', K_HOLDERS, id)
if held_until then
  if pruned > 0 then wake(L.concurrency_limit) end
  local cur = decode_info(id) or {}
  if tonumber(held_until) < NOW + lease_ms and cur.orphaned_at == nil then
    held_until = fmt(NOW + lease_ms)
    redis.call('ZADD', K_HOLDERS, 'XX', held_until, id)
  end
  local handoff = cur.handed_over == 1 and 0 or -1  -- a handed-over slot took no time to hand over
  return reply({1, tonumber(cur.fence or 0), cur.acquired_at or fmt(NOW), cur.epoch or ep, held_until, handoff})
end

local recovering = recovery_ms_left()
local free = L.concurrency_limit - redis.call('ZCARD', K_HOLDERS)
if recovering > 0 then free = 0 end
-- The slot goes to the caller: a new fence, its info, its lease. `woken`: when the wake that
-- brought it here was sent (nil if none).
local function grant(woken)
  local fence = next_fence()
  rec.fence = string.format('%.0f', fence)
  rec.acquired_at = fmt(NOW)
  rec.epoch = ep
  save_holder(id, rec)
  local expires = fmt(NOW + lease_ms)
  note_expiry(NOW + lease_ms)
  redis.call('ZADD', K_HOLDERS, expires, id)
  if pruned > 0 then wake(L.concurrency_limit) end
  local handoff = woken and fmt(NOW - tonumber(woken)) or -1
  return reply({1, fence, fmt(NOW), ep, expires, handoff})
end

local rank = redis.call('ZRANK', K_WAITERS, id)
local newcomer = not rank
if newcomer and free > 0 and redis.call('ZCARD', K_WAITERS) == 0 then
  -- Nobody waits and a slot is free: the slot is the newcomer's at once. Joining the line and
  -- leaving it in the same call would leave the same state (an empty line restarts its tags),
  -- with a dozen more commands.
  redis.call('DEL', K_FAIR)
  return grant(nil)
end
if newcomer then
  redis.call('ZADD', K_WAITERS, place(), id)
  redis.call('HSET', K_INFO, id, ARGV[5])  -- what a release hands the slot over with (wake())
  rank = redis.call('ZRANK', K_WAITERS, id)
end

if rank < free then
  local score = redis.call('ZSCORE', K_WAITERS, id)
  redis.call('ZREM', K_WAITERS, id)
  if score then served_tag(score) end
  line_served()
  redis.call('ZREM', K_WAITER_EXP, id)
  local woken = redis.call('HGET', K_WOKEN, id)
  redis.call('HDEL', K_WOKEN, id)
  return grant(woken)
end

-- Not admitted: a wake that brought it here is spent (the next one measures afresh). A newcomer
-- was never woken (a waiter's wake is forgotten with it).
if not newcomer then redis.call('HDEL', K_WOKEN, id) end
note_expiry(NOW + CFG.waiter_ttl_ms)
redis.call('ZADD', K_WAITER_EXP, fmt(NOW + CFG.waiter_ttl_ms), id)
if pruned > 0 then wake(L.concurrency_limit) end
return reply({0, rank, free, fmt(recovering)})
