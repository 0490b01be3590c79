-- The creation record's steps before a POST, as functions: sent after ledger_common.lua
-- (merged_attempt, alive, index_of) in front of attempt_intent.lua, attempt_post.lua and
-- attempt_create.lua (which does the intent, the creation token and the last check in one call).
-- Time always comes from Redis (TIME, passed in as {seconds, microseconds}), so that any host can
-- tell how long ago something was.

-- Unix seconds (number) and their text ('%.6f') of a Redis TIME reply.
local function attempt_time(t)
  local secs = tonumber(t[1]) + tonumber(t[2]) / 1e6
  return secs, string.format('%.6f', secs)
end

-- Record that a creation POST may be sent, and the input that POST will send in the item's
-- attempt record (the manifest's `attempts[].input`): the input is recorded before any POST, so
-- the manifest tells what was sent even if the run dies inside it.
-- record: the creation record (hash); unresolved: the model's index of intents (zset, marker ->
-- intent time; entries older than an hour dropped: by then any prediction such an intent made
-- has ended, Replicate stops them after 30 minutes); item, live: the item hash and the batch's
-- live zset (nil: the input is not recorded). wait: the `Prefer: wait` seconds the POST will ask
-- ('0': none; the POST may then be in flight that much longer); n: the attempt number;
-- input_json: '' = not recorded.
-- The input goes into att:<n> only while the item runs this attempt (ledger.update_attempt's
-- rule: a stale run never writes into another attempt's record); it is a sign of life too.
-- Returns the intent time (text).
local function attempt_write_intent(t, record, unresolved, item, live, model, ttl, wait, marker, n, input_json)
  local secs, stamp = attempt_time(t)
  -- `posting_marked`: this writer stamps `posting_at` before any POST, so an intent without it
  -- means no POST was sent (a record without the mark comes from an older version).
  redis.call('HSET', record, 'model', model, 'intent_at', stamp, 'posting_marked', '1', 'post_wait', wait or '0')
  redis.call('HDEL', record, 'post_returned_at', 'posting_at')
  redis.call('EXPIRE', record, ttl)
  redis.call('ZADD', unresolved, stamp, marker)
  redis.call('ZREMRANGEBYSCORE', unresolved, '-inf', tonumber(t[1]) - 3600)
  redis.call('EXPIRE', unresolved, 3600)
  if item and input_json and input_json ~= '' then
    local att_field = 'att:' .. n
    local v = redis.call('HMGET', item, 'status', 'attempt', att_field)
    if v[1] == 'running' and v[2] == n then
      redis.call('HSET', item, att_field, merged_attempt(v[3], n, { input = input_json }, secs))
      alive(live, index_of(item), secs)
    end
  end
  return stamp
end

-- The last check before a creation POST, reading only: the attempt's claim still holds
-- `claim_token`, no prediction is recorded for the attempt yet, the batch is not canceled, and
-- the item is still running attempt `n`. Returns nil when all hold, else the code of the first
-- that does not: 0 the claim is not ours, 2 a prediction is already recorded for the attempt, 3
-- the batch is canceled, 5 the item moved on (its current attempt is another, or it is not
-- running). (4, the slot's lease, is the caller's check: attempt_post.lua's or the limiter's.)
local function attempt_post_refusal(claim, batch, record, item, claim_token, n)
  if redis.call('GET', claim) ~= claim_token then
    return 0
  end
  if redis.call('HGET', record, 'prediction_id') then
    return 2
  end
  if redis.call('HGET', batch, 'canceled') == '1' then
    return 3
  end
  local v = redis.call('HMGET', item, 'status', 'attempt')
  if v[1] ~= 'running' or v[2] ~= n then
    return 5
  end
  return nil
end

-- Stamp `posting_at` on the creation record: a POST may be in flight from now. Returns the stamp.
local function attempt_stamp_posting(t, record, ttl)
  local _, stamp = attempt_time(t)
  redis.call('HSET', record, 'posting_at', stamp)
  redis.call('EXPIRE', record, ttl)
  return stamp
end
