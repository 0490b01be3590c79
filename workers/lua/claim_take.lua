-- Take a claim: KEYS[1] claim, KEYS[2] its "seen" marker; ARGV[1] token, ARGV[2] ttl ms,
-- ARGV[3] the marker's ttl (seconds). Returns 1 taken, 0 another run holds it.
-- The marker outlives the claim: a renewal that finds the claim gone but the marker there knows
-- the claim expired (its run stalled or was cut off; another run may have it now) rather than
-- that Redis lost both (a restart or a failover), which is the only case a claim is taken back.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
