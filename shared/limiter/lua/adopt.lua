-- Take over the slot still counted for a prediction (ARGV[6]) or, if none is known for it, for
-- an attempt (ARGV[7], '' for none) whose holder died or was cut off, without queueing: the
-- prediction runs either way, and one prediction is one slot. ARGV[3] the new holder id, ARGV[4]
-- lease ms, ARGV[5] info JSON. Allowed during the freeze after a state loss: it adds no slot.
-- Returns {1, fence, granted_at, epoch, expires_at, previous holder} or {0} if no slot is counted
-- for either (the caller then queues like everyone).
local id, lease_ms = ARGV[3], tonumber(ARGV[4])
local rec = cjson.decode(ARGV[5])
local prediction_id, attempt = ARGV[6], ARGV[7]
local L = limits(false)
local ep = sync_epoch(L)
local pruned = prune()
if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over
local previous = holder_of(prediction_id, attempt)
if not previous then
  if pruned > 0 then wake(L.concurrency_limit) end
  return reply({0})
end
local before = decode_info(previous) or {}
remove_holders({previous})
local fence = next_fence()
rec.prediction_id = prediction_id
if attempt ~= '' then rec.attempt = attempt else rec.attempt = before.attempt end
rec.creating_at = before.creating_at
rec.fence = string.format('%.0f', fence)
rec.acquired_at = fmt(NOW)
rec.epoch = ep
rec.adopted_from = previous
save_holder(id, rec)
local expires = fmt(NOW + lease_ms)
note_expiry(NOW + lease_ms)
redis.call('ZADD', K_HOLDERS, expires, id)
if pruned > 0 then wake(L.concurrency_limit) end
return reply({1, fence, fmt(NOW), ep, expires, previous})
