-- Record that a creation POST may be sent (before the creation token is taken; the POST itself
-- is marked by attempt_post.lua's `posting_at`). KEYS[1] the creation record (hash), KEYS[2] the
-- model's index of intents (zset, marker -> intent time; entries older than an hour dropped: by
-- then any prediction such an intent made has ended, Replicate stops them after 30 minutes);
-- ARGV[1] model, ARGV[2] ttl seconds, ARGV[3] the `Prefer: wait` seconds the POST will ask ("0":
-- none; the POST may then be in flight that much longer), ARGV[4] the attempt's marker. Time from
-- Redis, so that any host can tell how long ago it was.
-- Returns the intent time (Unix seconds).
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1e6)
-- `posting_marked`: this writer stamps `posting_at` before any POST, so an intent without it
-- means no POST was sent (a record without the mark comes from an older version).
redis.call('HSET', KEYS[1], 'model', ARGV[1], 'intent_at', now, 'posting_marked', '1', 'post_wait', ARGV[3] or '0')
redis.call('HDEL', KEYS[1], 'post_returned_at', 'posting_at')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(t[1]) - 3600)
redis.call('EXPIRE', KEYS[2], 3600)
return now
