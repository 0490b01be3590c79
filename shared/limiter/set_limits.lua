-- Change limits for every host at once. ARGV[2] JSON {field: value} (validated by the caller).
-- Growing the concurrency wakes waiters at once; shrinking lets holders finish and admits no
-- one until in_use < new limit (acquire compares against the limit on every call).
local changes = cjson.decode(ARGV[2])
limits(false)
for field, value in pairs(changes) do
  redis.call('HSET', K_LIMITS, field, tostring(value))
end
local L = limits(false)
prune_holders()
prune_waiters()
wake(L.concurrency)
return {L.concurrency, L.create_limit, L.read_limit, fmt(L.window_ms)}
