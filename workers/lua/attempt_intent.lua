-- Record that a creation POST may be sent (before the creation token is taken; the POST itself
-- is marked by attempt_post.lua's `posting_at`), and the input that POST will send, in one round
-- trip: attempt_common.lua's attempt_write_intent (sent in front, after ledger_common.lua).
-- KEYS[1] the creation record (hash), KEYS[2] the model's index of intents (zset), KEYS[3] the
-- item hash, KEYS[4] the batch's live zset (KEYS[3..4] may be left out: no input recorded);
-- ARGV[1] model, ARGV[2] ttl seconds, ARGV[3] the `Prefer: wait` seconds the POST will ask ("0":
-- none), ARGV[4] the attempt's marker, ARGV[5] the attempt number, ARGV[6] the input as JSON
-- text ("": not recorded).
-- Returns the intent time (Unix seconds).
return attempt_write_intent(
  redis.call('TIME'), KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
)
