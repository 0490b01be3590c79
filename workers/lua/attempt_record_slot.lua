-- The prediction id, the moment the POST answers, in ONE round trip: bound to its attempt
-- (bind_prediction(), attempt_bind.lua, as attempt_record.lua) and, only if that bound it, shown
-- on the attempt's slot (show_prediction(), as the limiter's set_prediction.lua). An attempt that
-- does not own the prediction (another adopted it first) never puts it on its slot.
-- Sent after the limiter's common.lua (the limiter's KEYS, config and epoch; lua_scripts inserts),
-- ledger_common.lua and attempt_bind.lua.
-- KEYS: the limiter's 16 (common.lua), then from KEYS[17] the four: the prediction's owner, the
-- creation record, the item hash, the batch's live zset; the budget's three last
-- (LimiterCore.call_with).
-- ARGV[1], ARGV[2] the limiter's config and the caller's epoch (common.lua), ARGV[3] the holder
-- id, ARGV[4] the prediction id, ARGV[5] the attempt's marker, ARGV[6] the origin, ARGV[7] the
-- records' ttl (seconds), ARGV[8] the attempt number.
-- Returns reply({bound, shown}): bound 0 when another attempt owns the prediction (nothing
-- changed, the slot included), else 1; shown as set_prediction.lua's (0: the holder is not
-- counted any more), 0 when not bound.
local holder, prediction_id = ARGV[3], ARGV[4]
local L = limits(false)
sync_epoch(L)  -- the limiter's checks first: a refused state fails the call before any write
local k = 17
if bind_prediction(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[5], prediction_id, ARGV[6],
                   ARGV[7], ARGV[8], '1', NOW / 1000) == 0 then
  return reply({0, 0})
end
return reply({1, show_prediction(holder, prediction_id)})
