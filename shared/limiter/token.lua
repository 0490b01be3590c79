-- Reserve one creation ('create') or read ('read') token: ARGV[2] kind, ARGV[3] grant id,
-- ARGV[4] safety margin ms, ARGV[5] the longest wait the caller accepts (ms, -1 = any).
-- Exact sliding window log: a token is granted at the earliest time `at` >= now such that
-- the R-th most recent grant is at least window+margin before it, so no window of that length
-- ever holds more than R grants. A grant may lie in the future (a reservation): the caller
-- sleeps until then without asking again, so waiting callers cause no retry storm and are
-- served in arrival order.
-- Returns {1, wait_ms, at_ms} or {0, wait_ms, reason} (reason 'paused' or 'busy').
local kind, member = ARGV[2], ARGV[3]
local margin_ms, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
local L = limits(false)
local log, limit = K_READS, L.read_limit
if kind == 'create' then
  log, limit = K_CREATES, L.create_limit
  local p = redis.call('HGET', K_PAUSE, 'until')
  if p and tonumber(p) > NOW then
    return {0, fmt(tonumber(p) - NOW), 'paused'}
  end
end

local span = L.window_ms + margin_ms
redis.call('ZREMRANGEBYSCORE', log, '-inf', fmt(NOW - span))
local count = redis.call('ZCARD', log)
local at = NOW
if count >= limit then
  local e = redis.call('ZRANGE', log, count - limit, count - limit, 'WITHSCORES')
  at = math.max(at, tonumber(e[2]) + span)
end
local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
if #last > 0 then at = math.max(at, tonumber(last[2])) end

local wait = at - NOW
if max_wait >= 0 and wait > max_wait then
  return {0, fmt(wait), 'busy'}
end
local at_s = fmt_up(at)
redis.call('ZADD', log, at_s, member)
redis.call('PEXPIRE', log, math.ceil(wait + span) + 1000)
return {1, fmt(wait), at_s}
