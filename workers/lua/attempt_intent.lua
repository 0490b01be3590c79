-- Record that a creation POST is about to be sent. KEYS[1] the attempt hash; ARGV[1] model,
-- ARGV[2] ttl seconds. Time from Redis, so that any host can tell how long ago it was.
-- Returns the intent time (Unix seconds).
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1e6)
redis.call('HSET', KEYS[1], 'model', ARGV[1], 'intent_at', now)
redis.call('HDEL', KEYS[1], 'post_returned_at')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return now
