-- Bind a prediction to the attempt that created (or adopted) it, in one round trip: its owner,
-- the creation record, and the prediction id in the item's attempt record (the manifest's
-- `attempts[].prediction_id`). Sent after ledger_common.lua (shared/lua): merged_attempt, alive,
-- index_of.
-- KEYS[1] the prediction's owner (`prediction:<id>`), KEYS[2] the creation record (hash),
-- KEYS[3] the item hash, KEYS[4] the batch's live zset.
-- ARGV[1] the attempt's marker, ARGV[2] the prediction id, ARGV[3] its origin (created, adopted,
-- retried), ARGV[4] the records' ttl (seconds), ARGV[5] the attempt number, ARGV[6] "1": record
-- the id in the item's attempt record too (only while the item runs this attempt, as
-- ledger.update_attempt: a stale run never writes into another attempt's record).
-- Returns 0 (nothing changed) when another attempt owns the prediction already, else 1.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[4]) then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
  end
end
redis.call('HSET', KEYS[2], 'prediction_id', ARGV[2], 'origin', ARGV[3])
redis.call('HDEL', KEYS[2], 'intent_at', 'posting_at', 'post_returned_at', 'post_wait')
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[6] == '1' then
  local att_field = 'att:' .. ARGV[5]
  local v = redis.call('HMGET', KEYS[3], 'status', 'attempt', att_field)
  if v[1] == 'running' and v[2] == ARGV[5] then
    local t = now()
    redis.call('HSET', KEYS[3], att_field, merged_attempt(v[3], ARGV[5], { prediction_id = ARGV[2] }, t))
    alive(KEYS[4], index_of(KEYS[3]), t)
  end
end
return 1
