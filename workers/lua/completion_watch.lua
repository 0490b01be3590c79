-- A worker starts waiting for a prediction. KEYS[1] completion:<id>, KEYS[2] watch:<id>.
-- ARGV[1] the process's wake list, ARGV[2] how long the watch may live (ms).
-- Returns the stored prediction JSON if it has arrived already (taken: deleted, and no watch set),
-- else false (and the watch is set, so a later arrival is pushed to ARGV[1]). One call: an
-- arrival can never slip in between, and the worker has nothing to clean up after either.
local arrived = redis.call('GET', KEYS[1])
if arrived then
  redis.call('DEL', KEYS[1])
  return arrived
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return false
