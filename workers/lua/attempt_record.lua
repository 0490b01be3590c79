-- Bind a prediction to its attempt in one round trip (bind_prediction(), attempt_bind.lua, sent
-- in front of this script after ledger_common.lua).
-- KEYS[1] the prediction's owner (`prediction:<id>`), KEYS[2] the creation record (hash),
-- KEYS[3] the item hash, KEYS[4] the batch's live zset.
-- ARGV[1] the attempt's marker, ARGV[2] the prediction id, ARGV[3] its origin (created, adopted,
-- retried), ARGV[4] the records' ttl (seconds), ARGV[5] the attempt number, ARGV[6] "1": record
-- the id in the item's attempt record too.
-- Returns 0 (nothing changed) when another attempt owns the prediction already, else 1.
return bind_prediction(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
