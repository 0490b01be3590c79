-- The feeder's leadership: extend the lock only while this process still holds it.
-- KEYS[1] the feeder lock; ARGV[1] this process's token, ARGV[2] the new lifetime (ms).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
