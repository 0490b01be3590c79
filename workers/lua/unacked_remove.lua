-- kombu's acknowledgement bookkeeping (QoS.ack, QoS.reject without requeue) in one call: the
-- delivery tag leaves the unacked index and its kept message goes. One script instead of kombu's
-- MULTI/ZREM/HDEL/EXEC: as atomic, one round trip, three client commands fewer per message.
-- KEYS[1] the unacked index (zset), KEYS[2] the unacked messages (hash); ARGV[1] the delivery tag.
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
