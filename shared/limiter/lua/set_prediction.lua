-- Record the prediction id in a holder's info and index. ARGV[3] holder id, ARGV[4] prediction
-- id. Keeps the attempt marker. Never brings back a holder that is gone (released, expired,
-- force-released): returns 1 if recorded, 0 if the holder is not counted.
local id, prediction_id = ARGV[3], ARGV[4]
local L = limits(false)
sync_epoch(L)
local rec = redis.call('ZSCORE', K_HOLDERS, id) and decode_info(id)
if not rec then return reply(0) end
unindex(K_BYPRED, rec.prediction_id, id)
rec.prediction_id = prediction_id
save_holder(id, rec)
return reply(1)
