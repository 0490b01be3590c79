-- Extend a claim we own. KEYS[1] claim, KEYS[2] its "seen" marker (claim_take.lua); ARGV[1]
-- token, ARGV[2] ttl ms, ARGV[3] the marker's ttl (seconds).
-- Returns 1 renewed, 2 re-asserted (claim and marker gone: Redis lost them in a restart or a
-- failover, and the live owner takes the claim back before anyone else can), 0 lost: another run
-- holds it, or it expired (the marker is still there). An expired claim stays lost: its run
-- stalled or was cut off longer than the claim lasts, and the attempt may have been sent again.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
  return 2
end
return 0
