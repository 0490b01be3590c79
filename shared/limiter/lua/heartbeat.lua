-- One call per process and tick: renew this process's leases and waiter registrations.
-- ARGV[3] = lease ms; ARGV[4] = JSON {"h": [[id, epoch, info_json], ...], "w": [id, ...]}.
-- Per holder: 1 renewed, 2 re-registered (Redis lost the state and there was room), 0 lost
-- (expired and pruned, force-released, or abandoned: it must stop counting itself).
-- Per waiter: 1 refreshed, 0 unknown (pruned or state lost: it must register again).
-- Returns {holder_results, waiter_results, epoch, ms_to_earliest_expiry}.
local lease_ms = tonumber(ARGV[3])
local req = cjson.decode(ARGV[4])
local holders = req.h or {}
local L = limits(false)
local ep = sync_epoch(L)
local pruned = prune()
if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over
-- A holder's info is needed only to re-register it, which only one from another epoch can be: a
-- decode costs more than the renewal itself, so the others' are never decoded. Still all before
-- the first renewal (only the limiter's own upkeep, above, writes before them).
local infos = {}
for i, h in ipairs(holders) do
  if h[2] ~= ep then infos[i] = cjson.decode(h[3]) end
end
local expires = fmt(NOW + lease_ms)
-- Renewals only move an expiry later, except an orphan's that becomes a lease again, and a
-- re-registration: prune_at must not lie after either (note_expiry writes only then).

-- A holder counted in Redis: renew it. One whose deadline lies beyond a lease is an orphan: if
-- it was cut off and is back, it is an ordinary lease again; if it abandoned its lease, a
-- renewal that was already on its way must not undo that.
local function renew(id, score)
  if tonumber(score) > NOW + lease_ms then
    local rec = decode_info(id) or {}
    if rec.abandoned_at ~= nil then return 0 end
    rec.orphaned_at = nil
    save_holder(id, rec)
  end
  note_expiry(NOW + lease_ms)
  redis.call('ZADD', K_HOLDERS, 'XX', expires, id)
  return 1
end

local out_h = {}
for i, h in ipairs(holders) do
  local id, holder_epoch = h[1], h[2]
  local score = redis.call('ZSCORE', K_HOLDERS, id)
  if score then
    out_h[i] = renew(id, score)
  elseif holder_epoch ~= ep and redis.call('ZCARD', K_HOLDERS) < L.concurrency_limit then
    -- Redis forgot it (a different epoch); its prediction, if any, runs at Replicate and counts
    -- whether we know it or not, so it goes in before any waiter (the freeze after the loss
    -- keeps the room for it). Its fence stays; new fences start from Redis time, hence larger.
    -- Same epoch and missing, by contrast, means expired, force-released or released: lost,
    -- never re-added.
    local rec = infos[i]
    rec.epoch = ep
    save_holder(id, rec)
    note_expiry(NOW + lease_ms)
    redis.call('ZADD', K_HOLDERS, expires, id)
    out_h[i] = 2
  else
    out_h[i] = 0
  end
end

local out_w = {}
local waiter_expires = fmt(NOW + CFG.waiter_ttl_ms)
for i, w in ipairs(req.w or {}) do
  if redis.call('ZSCORE', K_WAITERS, w) then
    note_expiry(NOW + CFG.waiter_ttl_ms)  -- only ever writes if Redis's clock stepped back
    redis.call('ZADD', K_WAITER_EXP, waiter_expires, w)
    out_w[i] = 1
  else
    out_w[i] = 0
  end
end

if pruned > 0 then wake(L.concurrency_limit) end
return reply({out_h, out_w, ep, fmt(ms_to_earliest_expiry())})
