-- A prediction (ARGV[2]) is known to be over (terminal, or canceled by us): free the slot still
-- counted for it. ARGV[3] = '1': only if its holder is orphaned (it died or was cut off) -- the
-- webhook receiver settles every ended prediction this way; a live holder releases its own.
-- Returns 1 if a slot was freed, else 0.
local L = limits(false)
local pruned = prune_holders() + prune_waiters()
local holder = holder_of_prediction(ARGV[2])
if holder and ARGV[3] == '1' then
  local rec = cjson.decode(redis.call('HGET', K_INFO, holder) or '{}')
  if rec.orphaned_at == nil then holder = nil end
end
if holder then remove_holders({holder}) end
if holder or pruned > 0 then wake(L.concurrency) end
return holder and 1 or 0
