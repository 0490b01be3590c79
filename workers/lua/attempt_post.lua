-- The last check before a creation POST, in one round trip (nothing else stands between the
-- creation token and the POST): the claim is still this run's, the item is still running this
-- attempt, no prediction is recorded for the attempt yet, the batch is not canceled
-- (attempt_common.lua's attempt_post_refusal, sent in front after ledger_common.lua), and the
-- slot's lease is still held in the limiter (by fence); then `posting_at` (Redis time) is stamped
-- on the creation record, from when a POST may be in flight.
-- KEYS[1] the attempt's claim, KEYS[2] the batch hash, KEYS[3] the creation record (hash),
-- KEYS[4] the item hash, KEYS[5] the limiter's holders zset, KEYS[6] the limiter's info hash.
-- ARGV[1] the claim token, ARGV[2] the creation record's ttl (seconds), ARGV[3] the attempt
-- number, ARGV[4] the slot's holder id and ARGV[5] its fence ('' and '': no slot to check).
-- Returns {code, posting_at}: 1 go (stamped), 0 the claim is not ours, 2 a prediction is already
-- recorded for the attempt, 3 the batch is canceled, 4 the slot's lease is not held any more (it
-- ran out while this run stalled: the slot may be someone else's now), 5 the item moved on (its
-- current attempt is another, or it is not running); codes other than 1 stamp nothing.
local refused = attempt_post_refusal(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[3])
if refused then
  return {refused, ''}
end
local t = redis.call('TIME')
local holder = ARGV[4]
if holder ~= '' then
  -- The limiter's holds() (shared/limiter/lua/common.lua), on the same keys: counted, not run
  -- out, not an orphan, the same grant. (attempt_create.lua calls holds() itself.)
  local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local expiry = redis.call('ZSCORE', KEYS[5], holder)
  local raw = redis.call('HGET', KEYS[6], holder)
  if not expiry or tonumber(expiry) < now_ms or not raw then
    return {4, ''}
  end
  local rec = cjson.decode(raw)
  if rec.orphaned_at ~= nil or rec.abandoned_at ~= nil or tostring(rec.fence) ~= ARGV[5] then
    return {4, ''}
  end
end
return {1, attempt_stamp_posting(t, KEYS[3], ARGV[2])}
