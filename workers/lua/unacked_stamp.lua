-- kombu's unacked index stamped with Redis's own time (seconds, as kombu's float stamps), so the
-- redelivery ceiling compares one clock (workers/kombu_patches.py).
-- KEYS[1] the unacked index; ARGV[1] the delivery tag.
local t = redis.call('TIME')
return redis.call('ZADD', KEYS[1], string.format('%d.%06d', t[1], t[2]), ARGV[1])
