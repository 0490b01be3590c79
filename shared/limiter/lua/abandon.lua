-- A holder gives up its lease without giving back the slot (ARGV[3] holder id): a creation POST
-- of its came back ambiguous, so a prediction may run at Replicate that nobody knows. The slot
-- becomes an orphan at once (counted for at most CFG.orphan_ms ms, until adopted or settled), and
-- renewals that were already on their way can no longer turn it back into a lease.
-- Never brings back a holder that is gone (released, expired, force-released).
-- Returns 1 if the holder is now an abandoned orphan, 0 if it was not counted.
local id = ARGV[3]
local L = limits(false)
sync_epoch(L)
local rec = redis.call('ZSCORE', K_HOLDERS, id) and decode_info(id)
if not rec then return reply(0) end
rec.abandoned_at = rec.abandoned_at or fmt(NOW)
if rec.orphaned_at == nil then
  orphan(id, rec)
else
  save_holder(id, rec)  -- already orphaned: its deadline stays
end
return reply(1)
