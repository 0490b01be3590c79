-- Record that a creation POST may be sent (before the creation token is taken; the POST itself
-- is marked by attempt_post.lua's `posting_at`), and the input that POST will send in the item's
-- attempt record (the manifest's `attempts[].input`), in one round trip: the input is recorded
-- before any POST, so the manifest tells what was sent even if this run dies inside it.
-- Sent after ledger_common.lua (shared/lua): merged_attempt, alive, index_of.
-- KEYS[1] the creation record (hash), KEYS[2] the model's index of intents (zset, marker -> intent
-- time; entries older than an hour dropped: by then any prediction such an intent made has
-- ended, Replicate stops them after 30 minutes), KEYS[3] the item hash, KEYS[4] the batch's live
-- zset; ARGV[1] model, ARGV[2] ttl seconds, ARGV[3] the `Prefer: wait` seconds the POST will ask
-- ("0": none; the POST may then be in flight that much longer), ARGV[4] the attempt's marker,
-- ARGV[5] the attempt number, ARGV[6] the input as JSON text ("": not recorded). Time from Redis,
-- so that any host can tell how long ago it was.
-- The input goes into att:<n> only while the item runs this attempt (ledger.update_attempt's
-- rule: a stale run never writes into another attempt's record); it is a sign of life too.
-- Returns the intent time (Unix seconds).
local t = redis.call('TIME')
local secs = tonumber(t[1]) + tonumber(t[2]) / 1e6
local stamp = string.format('%.6f', secs)
-- `posting_marked`: this writer stamps `posting_at` before any POST, so an intent without it
-- means no POST was sent (a record without the mark comes from an older version).
redis.call('HSET', KEYS[1], 'model', ARGV[1], 'intent_at', stamp, 'posting_marked', '1', 'post_wait', ARGV[3] or '0')
redis.call('HDEL', KEYS[1], 'post_returned_at', 'posting_at')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], stamp, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(t[1]) - 3600)
redis.call('EXPIRE', KEYS[2], 3600)
if KEYS[3] and ARGV[6] and ARGV[6] ~= '' then
  local att_field = 'att:' .. ARGV[5]
  local v = redis.call('HMGET', KEYS[3], 'status', 'attempt', att_field)
  if v[1] == 'running' and v[2] == ARGV[5] then
    redis.call('HSET', KEYS[3], att_field, merged_attempt(v[3], ARGV[5], { input = ARGV[6] }, secs))
    alive(KEYS[4], index_of(KEYS[3]), secs)
  end
end
return stamp
