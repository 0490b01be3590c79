-- A terminal prediction arrived (webhook). KEYS[1] completion:<id>, KEYS[2] watch:<id>.
-- ARGV[1] the prediction JSON, ARGV[2] how long to keep it (ms), ARGV[3] prediction id.
-- Stores the prediction for whoever asks later, and wakes the process that waits for it now.
-- Returns 1 if a waiter was woken, 0 if nobody waits (yet).
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local wake_list = redis.call('GET', KEYS[2])
if not wake_list then return 0 end
-- The wake list's expiry (a dead process's list goes) is set when the list is created: a live
-- listener empties it within milliseconds (the key goes with its last id), so a list that lives
-- 60 s has nobody reading it. Not set again on every push (issue 16.4: one command per image).
if redis.call('RPUSH', wake_list, ARGV[3]) == 1 then redis.call('PEXPIRE', wake_list, 60000) end
return 1
