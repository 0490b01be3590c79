-- Record the prediction id in a holder's info (for status). ARGV[2] holder id, ARGV[3] id.
local raw = redis.call('HGET', K_INFO, ARGV[2])
if not raw then return 0 end
local rec = cjson.decode(raw)
rec.prediction_id = ARGV[3]
save_holder(ARGV[2], rec)
return 1
