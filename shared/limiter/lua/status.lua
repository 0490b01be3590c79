-- A snapshot in one round trip. It prunes first (when due), like every other script (so a dead holder whose
-- prediction may still run shows as orphaned, and a freed slot reaches the next waiter); it never
-- seeds the limits. Returns one JSON string; times are relative to Redis "now" except now_ms.
local L = limits(true)
sync_epoch(L)
if prune() > 0 or thawed() then wake(L.concurrency_limit) end
local live = '(' .. fmt(NOW)
local holders = {}
local rows = redis.call('ZRANGEBYSCORE', K_HOLDERS, live, '+inf', 'WITHSCORES')
for i = 1, #rows, 2 do
  local id, exp = rows[i], tonumber(rows[i + 1])
  local rec = decode_info(id) or {}
  rec.holder_id = id
  rec.expires_in_ms = exp - NOW
  if rec.acquired_at then rec.held_for_ms = NOW - tonumber(rec.acquired_at) end
  rec.acquired_at = nil
  holders[#holders + 1] = rec
end
local window_start = '(' .. fmt(NOW - L.rate_window_ms)
local pause = redis.call('HMGET', K_PAUSE, 'until', 'reason')
local out = {
  now_ms = fmt(NOW),
  concurrency_limit = L.concurrency_limit, create_limit = L.create_limit, read_limit = L.read_limit,
  rate_window_ms = L.rate_window_ms,
  in_use = #holders,
  waiters = redis.call('ZCOUNT', K_WAITER_EXP, live, '+inf'),
  creations_in_window = redis.call('ZCOUNT', K_CREATES, window_start, fmt(NOW)),
  creations_reserved = redis.call('ZCOUNT', K_CREATES, live, '+inf'),
  reads_in_window = redis.call('ZCOUNT', K_READS, window_start, fmt(NOW)),
  reads_reserved = redis.call('ZCOUNT', K_READS, live, '+inf'),
  pause_ms_left = 0,
  recovery_ms_left = recovery_ms_left(),
  epoch = EPOCH,
  fence = redis.call('GET', K_FENCE) or '0',
  holders = holders,
}
if pause[1] and tonumber(pause[1]) > NOW then
  out.pause_ms_left = tonumber(pause[1]) - NOW
  out.pause_reason = pause[2] or ''
end
return reply(cjson.encode(out))
