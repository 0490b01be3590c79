-- Reserve one creation ('create') or read ('read') token: ARGV[3] kind, ARGV[4] grant id,
-- ARGV[5] safety margin ms, ARGV[6] the longest wait the caller accepts (ms, -1 = any),
-- ARGV[7] holder id, ARGV[8] attempt marker ('' when not given; creations only), ARGV[9] the
-- attempt's reservation (shared/budget: JSON, '' = none; creations only), ARGV[10] the holder's
-- fence ('' when not given).
-- Exact sliding window log: a token is granted at the earliest time `at` >= now such that
-- the R-th most recent grant is at least window+margin before it, so no window of that length
-- ever holds more than R grants (see next_grant_time). A grant may lie in the future (a
-- reservation): the caller sleeps until then without asking again, so waiting callers cause no
-- retry storm and are served in arrival order; it confirms the reservation when it wakes.
-- With a holder, the grant also marks that holder as creating for the attempt (in the same
-- call): if it dies before it records the prediction id, its slot stays counted as an orphan
-- (prune_holders), since the POST may have created a prediction that runs.
-- With a reservation, the grant also reserves the attempt's price (budget_common.lua, sent in
-- front of this script), and no token is granted when it does not fit a spending limit.
-- A creation token is only for a holder that still holds its lease (holds(): counted, not
-- expired, not orphaned, same fence): one whose lease ran out while it stalled (SIGSTOP, a VM or
-- GC pause, a forward step of Redis's clock) may have seen its slot granted to another, and must
-- not create beside it.
-- Returns {1, wait_ms, at_ms} or {0, wait_ms, reason} (reason 'paused', 'busy' or 'lost': the
-- holder does not hold its lease; nothing reserved, nothing marked) or {0, 0, 'budget', scope,
-- limit micro-USD}.
local kind, member = ARGV[3], ARGV[4]
local margin_ms, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
local holder, attempt, fence = ARGV[7] or '', ARGV[8] or '', ARGV[10] or ''
local reservation = reservation_of(ARGV[9])
if not RATE_LOG[kind] then fail('unknown token kind ' .. tostring(kind)) end
if not margin_ms or margin_ms < 0 or not max_wait then fail('bad margin or wait') end
if (holder == '') ~= (attempt == '') or (holder ~= '' and kind ~= 'create') then
  fail('a holder and its attempt go together, with creation tokens only')
end
if reservation and kind ~= 'create' then fail('a reservation goes with a creation token only') end
local L = limits(false)
sync_epoch(L)
local held = holder ~= '' and holds(holder, fence)  -- its info, read once
if holder ~= '' and not held then
  return reply({0, 0, 'lost'})
end
if kind == 'create' then
  local p = redis.call('HGET', K_PAUSE, 'until')
  if p and tonumber(p) > NOW then
    return reply({0, fmt(tonumber(p) - NOW), 'paused'})
  end
end

local budget_today = budget_day(NOW / 1000)
if reservation then
  local refused = budget_refusal(reservation, budget_today)
  if refused then return reply({0, 0, 'budget', refused[1], string.format('%d', refused[2])}) end
end

local limit = rate_limit(kind, L)
local span = L.rate_window_ms + margin_ms
local at = next_grant_time(kind, limit, span, prune_log(kind, limit, span))
local wait = at - NOW
if max_wait >= 0 and wait > max_wait then
  return reply({0, fmt(wait), 'busy'})
end
local at_s = fmt_up(at)
redis.call('ZADD', RATE_LOG[kind], at_s, member)
keep_rate_state(kind, at)
if reservation then budget_reserve(reservation, budget_today) end

-- Mark the holder: should it die before it records the prediction id, its slot stays counted.
if held then
  local rec = held
  if rec.attempt ~= attempt then unindex(K_BYATTEMPT, rec.attempt, holder) end
  rec.attempt = attempt
  rec.creating_at = at_s
  save_holder(holder, rec)
end
return reply({1, fmt(wait), at_s})
