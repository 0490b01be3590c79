-- A terminal prediction arrived (webhook). KEYS[1] completion:<id>, KEYS[2] watch:<id>.
-- ARGV[1] the prediction JSON, ARGV[2] how long to keep it (ms), ARGV[3] prediction id.
-- Stores the prediction for whoever asks later, and wakes the process that waits for it now.
-- Returns 1 if a waiter was woken, 0 if nobody waits (yet).
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local wake_list = redis.call('GET', KEYS[2])
if not wake_list then return 0 end
redis.call('RPUSH', wake_list, ARGV[3])
redis.call('PEXPIRE', wake_list, 60000)
return 1
