-- Extend a claim we own. KEYS[1] claim, ARGV[1] token, ARGV[2] ttl ms.
-- Returns 1 renewed, 2 re-asserted (the key was gone: Redis lost it in a restart or failover, and
-- the live owner takes it back before anyone else can), 0 another run holds it now.
local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 2
end
return 0
