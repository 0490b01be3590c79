-- Stage one chunk of a batch's items before ledger_create.lua records the batch: a batch of
-- 20 000 items written in one call would block Redis (and every limiter call of the fleet) for a
-- third of a second, so the items go in chunks and the batch itself in one short call at the
-- end. Staged items are invisible: nothing lists or runs an item whose batch hash does not exist,
-- and they expire (ARGV[4]) unless the batch is recorded (then Ledger persists them).
-- KEYS = batch hash, staging key (the producer recording this id), live zset, item hash x n
-- ARGV[1] staging token, ARGV[2] staging key ttl ms, ARGV[3] "1" for the first chunk, ARGV[4]
-- staged keys' ttl (seconds), ARGV[5..] one JSON per item: {"i": index, "request": <ImageRequest
-- JSON string>, "model": first model}, in the order of KEYS[4..].
-- Returns 1 staged, 0 the batch exists already, 3 another producer is recording this batch id.
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
local holder = redis.call("GET", KEYS[2])
if ARGV[3] == "1" then
  if holder and holder ~= ARGV[1] then
    return 3
  end
  redis.call("SET", KEYS[2], ARGV[1], "PX", ARGV[2])
  redis.call("DEL", KEYS[3])
elseif holder ~= ARGV[1] then
  return 3
else
  redis.call("PEXPIRE", KEYS[2], ARGV[2])
end
local t = string.format("%.6f", now())
for n = 5, #ARGV do
  local spec = cjson.decode(ARGV[n])
  local key = KEYS[n - 1]
  redis.call("DEL", key)
  redis.call("HSET", key, "status", "pending", "attempt", 1, "base_attempt", 1,
    "current_model", spec.model, "request", spec.request)
  redis.call("EXPIRE", key, ARGV[4])
  redis.call("ZADD", KEYS[3], t, spec.i)
end
redis.call("EXPIRE", KEYS[3], ARGV[4])
return 1
