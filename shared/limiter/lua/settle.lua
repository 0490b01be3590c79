-- A prediction (ARGV[3], '' if unknown) or an attempt (ARGV[4], '' for none) is known to be
-- over: terminal, canceled by us, or never created. Free the slot still counted for it (the
-- prediction's holder if one is known, else the attempt's). ARGV[5] = '1': only if its holder is
-- orphaned (it died, was cut off, or abandoned its lease) -- the webhook receiver and the sweep
-- settle this way; a live holder releases its own.
-- Returns 1 if a slot was freed, else 0.
local prediction_id, attempt, orphaned_only = ARGV[3], ARGV[4], ARGV[5] == '1'
local L = limits(false)
sync_epoch(L)
local pruned = prune()
if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over
local holder = holder_of(prediction_id, attempt)
if holder and orphaned_only then
  local rec = decode_info(holder) or {}
  if rec.orphaned_at == nil then holder = nil end
end
if holder then remove_holders({holder}) end
if holder or pruned > 0 then wake(L.concurrency_limit) end
return reply(holder and 1 or 0)
