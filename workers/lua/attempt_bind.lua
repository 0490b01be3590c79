-- bind_prediction(): bind a prediction to the attempt that created (or adopted) it: its owner,
-- the creation record, and the prediction id in the item's attempt record (the manifest's
-- `attempts[].prediction_id`). Functions only: sent after ledger_common.lua (shared/lua:
-- merged_attempt, alive, index_of) in front of attempt_record.lua, and of
-- attempt_record_slot.lua (the same, with the id shown on the attempt's slot).
-- k_owner the prediction's owner (`prediction:<id>`), k_record the creation record (hash),
-- k_item the item hash, k_live the batch's live zset; marker the attempt's marker, origin
-- created, adopted or retried, ttl the records' ttl (seconds), attempt the attempt number,
-- in_ledger "1": record the id in the item's attempt record too (only while the item runs this
-- attempt, as ledger.update_attempt: a stale run never writes into another attempt's record);
-- t the time to write there (Unix seconds; nil: Redis TIME, once the caller has none).
-- Returns 0 (nothing changed) when another attempt owns the prediction already, else 1.
local function bind_prediction(k_owner, k_record, k_item, k_live, marker, prediction_id, origin, ttl,
                               attempt, in_ledger, t)
  if not redis.call('SET', k_owner, marker, 'NX', 'EX', ttl) then
    if redis.call('GET', k_owner) ~= marker then
      return 0
    end
  end
  redis.call('HSET', k_record, 'prediction_id', prediction_id, 'origin', origin)
  redis.call('HDEL', k_record, 'intent_at', 'posting_at', 'post_returned_at', 'post_wait')
  redis.call('EXPIRE', k_record, ttl)
  if in_ledger == '1' then
    local att_field = 'att:' .. attempt
    local v = redis.call('HMGET', k_item, 'status', 'attempt', att_field)
    if v[1] == 'running' and v[2] == attempt then
      t = t or now()
      redis.call('HSET', k_item, att_field, merged_attempt(v[3], attempt, { prediction_id = prediction_id }, t))
      alive(k_live, index_of(k_item), t)
    end
  end
  return 1
end
