-- One call per process and tick: renew this process's leases and waiter registrations.
-- ARGV[2] = lease ms; ARGV[3] = JSON {"h": [[id, epoch, info_json], ...], "w": [id, ...]}.
-- Per holder: 1 renewed, 2 re-adopted (Redis lost the state and there was room), 0 lost
-- (expired and pruned, or force-released: it must stop counting itself).
-- Per waiter: 1 refreshed, 0 unknown (pruned or state lost: it must register again).
-- Returns {holder_results, waiter_results, epoch, ms_to_earliest_expiry}.
local lease_ms = tonumber(ARGV[2])
local req = cjson.decode(ARGV[3])
local L = limits(false)
local pruned = prune_holders() + prune_waiters()
local ep = epoch()
local expires = fmt(NOW + lease_ms)

local out_h = {}
for i, h in ipairs(req.h or {}) do
  local id, holder_epoch = h[1], h[2]
  local score = redis.call('ZSCORE', K_HOLDERS, id)
  if score then
    if tonumber(score) > NOW + lease_ms then
      -- It was orphaned (its renewals did not get through in time) and nobody adopted it: the
      -- holder is back, so the slot is an ordinary lease again.
      local rec = cjson.decode(redis.call('HGET', K_INFO, id) or '{}')
      rec.orphaned_at = nil
      save_holder(id, rec)
    end
    redis.call('ZADD', K_HOLDERS, 'XX', expires, id)
    out_h[i] = 1
  elseif holder_epoch ~= ep and redis.call('ZCARD', K_HOLDERS) < L.concurrency then
    -- Still running at Replicate: it counts whether we know it or not, so it goes in before
    -- any waiter. Its fence stays; new fences start from Redis time, hence stay larger.
    local rec = cjson.decode(h[3])
    rec.epoch = ep
    save_holder(id, rec)
    redis.call('ZADD', K_HOLDERS, expires, id)
    out_h[i] = 2
  else
    out_h[i] = 0
  end
end

local out_w = {}
local waiter_expires = fmt(NOW + CFG.wt)
for i, w in ipairs(req.w or {}) do
  if redis.call('ZSCORE', K_WAITERS, w) then
    redis.call('ZADD', K_WAITER_EXP, waiter_expires, w)
    out_w[i] = 1
  else
    out_w[i] = 0
  end
end

if pruned > 0 then wake(L.concurrency) end
return {out_h, out_w, ep, fmt(ms_to_earliest_expiry())}
