-- A terminal prediction arrived (webhook). KEYS[1] completion:<id>, KEYS[2] watch:<id>, KEYS[3]
-- (optional) the delivery's webhook-seen key.
-- ARGV[1] the prediction JSON, ARGV[2] how long to keep it for a later watch (ms), ARGV[3] the
-- wake token (JSON: the waiter's id and the prediction), ARGV[4] how long to keep it once handed
-- to a waiting process (ms), ARGV[5] how long the delivery is remembered (s), ARGV[6] its value.
-- A delivery seen before (KEYS[3] set) changes nothing: -1. Checked here, in the same call, it
-- costs no round trip of its own, and a failed call leaves no mark that would turn Replicate's
-- next delivery away.
-- A process waits: the token hands it the prediction (no GET to follow) and the watch is consumed
-- (no DEL to follow); a copy stays ARGV[4] ms, for a waiter that reads it instead (a worker of the
-- version before, or a run redelivered at once). Nobody waits (yet): stored for the watch.
-- Returns 1 if a waiter was woken, 0 if nobody waits (yet), -1 if the delivery was seen before.
if KEYS[3] and not redis.call('SET', KEYS[3], ARGV[6], 'NX', 'EX', ARGV[5]) then
  return -1
end
local wake_list = redis.call('GET', KEYS[2])
if not wake_list then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('RPUSH', wake_list, ARGV[3])
redis.call('PEXPIRE', wake_list, 60000)
redis.call('DEL', KEYS[2])
return 1
