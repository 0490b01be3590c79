-- kombu's delivery bookkeeping (QoS.append) in one call: the message kept for redelivery and its
-- stamp in the unacked index, with Redis's own time (seconds, as kombu's float stamps), so the
-- redelivery ceiling compares one clock (workers/kombu_patches.py). One script instead of kombu's
-- MULTI/ZADD/HSET/EXEC: as atomic, two client commands fewer per message.
-- KEYS[1] the unacked index (zset), KEYS[2] the unacked messages (hash), KEYS[3] (optional) the
-- feeder's wake list;
-- ARGV[1] the delivery tag, ARGV[2] the message as kombu stores it (JSON [raw, exchange, key]),
-- ARGV[3] how many wake tokens the list keeps at most.
-- The message left the broker's list: with KEYS[3], the feeder is told there is room, in this
-- call (the worker's own RPUSH at the task's start was a round trip per image).
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], string.format('%d.%06d', t[1], t[2]), ARGV[1])
local kept = redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if KEYS[3] and redis.call('RPUSH', KEYS[3], '1') > tonumber(ARGV[3]) then
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
end
return kept
