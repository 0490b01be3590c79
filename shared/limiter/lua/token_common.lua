-- The creation and read tokens' functions, sent after common.lua and budget_common.lua (which
-- they call) in front of token.lua, and of the scripts of other owners that take a creation
-- token in the same call as their own step (workers/lua/attempt_create.lua: the intent and the
-- last check before the POST).
-- The token's arguments are ARGV[3..10] of every such script: [3] kind ('create' or 'read'),
-- [4] grant id, [5] safety margin ms, [6] the longest wait the caller accepts (ms, -1 = any),
-- [7] holder id, [8] attempt marker ('' when not given; creations only), [9] the attempt's
-- reservation (shared/budget: JSON, '' = none; creations only), [10] the holder's fence (''
-- when not given).
-- Exact sliding window log: a token is granted at the earliest time `at` >= now such that
-- the R-th most recent grant is at least window+margin before it, so no window of that length
-- ever holds more than R grants (see next_grant_time). A grant may lie in the future (a
-- reservation): the caller sleeps until then without asking again, so waiting callers cause no
-- retry storm and are served in arrival order; it confirms the reservation when it wakes.
-- With a holder, the grant also marks that holder as creating for the attempt (in the same
-- call): if it dies before it records the prediction id, its slot stays counted as an orphan
-- (prune_holders), since the POST may have created a prediction that runs.
-- With a reservation, the grant also reserves the attempt's price (budget_common.lua), and no
-- token is granted when it does not fit a spending limit.
-- A creation token is only for a holder that still holds its lease (holds(): counted, not
-- expired, not orphaned, same fence): one whose lease ran out while it stalled (SIGSTOP, a VM or
-- GC pause, a forward step of Redis's clock) may have seen its slot granted to another, and must
-- not create beside it.

-- The token's arguments (ARGV[3..10]), decoded and checked (nothing is written before).
local function token_args()
  local T = {
    kind = ARGV[3], member = ARGV[4], margin_ms = tonumber(ARGV[5]), max_wait = tonumber(ARGV[6]),
    holder = ARGV[7] or '', attempt = ARGV[8] or '', reservation = reservation_of(ARGV[9]),
    fence = ARGV[10] or '',
  }
  if not RATE_LOG[T.kind] then fail('unknown token kind ' .. tostring(T.kind)) end
  if not T.margin_ms or T.margin_ms < 0 or not T.max_wait then fail('bad margin or wait') end
  if (T.holder == '') ~= (T.attempt == '') or (T.holder ~= '' and T.kind ~= 'create') then
    fail('a holder and its attempt go together, with creation tokens only')
  end
  if T.reservation and T.kind ~= 'create' then fail('a reservation goes with a creation token only') end
  return T
end

-- Whether token T can be granted, and when: {at, wait, held (the holder's info), day}, or
-- nil and the refusal to reply: {0, wait_ms, reason} (reason 'paused', 'busy' or 'lost': the
-- holder does not hold its lease) or {0, 0, 'budget', scope, limit micro-USD}. Writes nothing
-- of the grant (only the limiter's own upkeep: the epoch, seeded limits, the log's old grants).
local function token_decide(T)
  local L = limits(false)
  sync_epoch(L)
  local held = T.holder ~= '' and holds(T.holder, T.fence)  -- its info, read once
  if T.holder ~= '' and not held then
    return nil, {0, 0, 'lost'}
  end
  if T.kind == 'create' then
    local p = redis.call('HGET', K_PAUSE, 'until')
    if p and tonumber(p) > NOW then
      return nil, {0, fmt(tonumber(p) - NOW), 'paused'}
    end
  end
  local day = budget_day(NOW / 1000)
  if T.reservation then
    local refused = budget_refusal(T.reservation, day)
    if refused then return nil, {0, 0, 'budget', refused[1], string.format('%d', refused[2])} end
  end
  local limit = rate_limit(T.kind, L)
  local span = L.rate_window_ms + T.margin_ms
  local at = next_grant_time(T.kind, limit, span, prune_log(T.kind, limit, span))
  local wait = at - NOW
  if T.max_wait >= 0 and wait > T.max_wait then
    return nil, {0, fmt(wait), 'busy'}
  end
  return {at = at, wait = wait, held = held, day = day}
end

-- Grant token T as decided (G from token_decide): the log, the reservation, the holder's mark.
-- Returns the reply {1, wait_ms, at_ms}.
local function token_grant(T, G)
  local at_s = fmt_up(G.at)
  redis.call('ZADD', RATE_LOG[T.kind], at_s, T.member)
  keep_rate_state(T.kind, G.at)
  if T.reservation then budget_reserve(T.reservation, G.day) end
  -- Mark the holder: should it die before it records the prediction id, its slot stays counted.
  if G.held then
    local rec = G.held
    if rec.attempt ~= T.attempt then unindex(K_BYATTEMPT, rec.attempt, T.holder) end
    rec.attempt = T.attempt
    rec.creating_at = at_s
    save_holder(T.holder, rec)
  end
  return {1, fmt(G.wait), at_s}
end
