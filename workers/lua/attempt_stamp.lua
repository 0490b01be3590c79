-- Stamp a field of an attempt's creation record with the Redis time. KEYS[1] the creation
-- record (hash); ARGV[1] the field, ARGV[2] the record's ttl (seconds). Returns the time (Unix seconds).
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1e6)
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return now
