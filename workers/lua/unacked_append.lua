-- kombu's delivery bookkeeping (QoS.append) in one call: the message kept for redelivery and its
-- stamp in the unacked index, with Redis's own time (seconds, as kombu's float stamps), so the
-- redelivery ceiling compares one clock (workers/kombu_patches.py). One script instead of kombu's
-- MULTI/ZADD/HSET/EXEC: as atomic, two client commands fewer per message.
-- KEYS[1] the unacked index (zset), KEYS[2] the unacked messages (hash);
-- ARGV[1] the delivery tag, ARGV[2] the message as kombu stores it (JSON [raw, exchange, key]).
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], string.format('%d.%06d', t[1], t[2]), ARGV[1])
return redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
