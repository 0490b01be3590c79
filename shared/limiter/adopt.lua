-- Take over the slot still counted for a prediction (ARGV[5]) whose holder died or was cut off,
-- without queueing: the prediction runs either way, and one prediction is one slot. ARGV[2] the
-- new holder id, ARGV[3] lease ms, ARGV[4] info JSON.
-- Returns {1, fence, granted_at, epoch, expires_at, previous holder} or {0} if no slot is counted
-- for the prediction (the caller then queues like everyone).
local id, lease_ms, info, prediction_id = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local L = limits(false)
local pruned = prune_holders() + prune_waiters()
local ep = epoch()
local previous = holder_of_prediction(prediction_id)
if not previous then
  if pruned > 0 then wake(L.concurrency) end
  return {0}
end
remove_holders({previous})
local fence = next_fence()
local rec = cjson.decode(info)
rec.prediction_id = prediction_id
rec.fence = string.format('%.0f', fence)
rec.acquired_at = fmt(NOW)
rec.epoch = ep
rec.adopted_from = previous
save_holder(id, rec)
local expires = fmt(NOW + lease_ms)
redis.call('ZADD', K_HOLDERS, expires, id)
if pruned > 0 then wake(L.concurrency) end
return {1, fence, fmt(NOW), ep, expires, previous}
