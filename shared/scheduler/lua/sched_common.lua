-- Prelude of every scheduler script (shared/scheduler/lua/*.lua); lua_scripts.py sends it first.
--
-- The scheduler holds every send the fleet has decided on until the feeder moves it into the
-- broker (shared/scheduler/schedule.py). One pending send per item at most:
--   P:sched:entry:<b>   HASH  index -> JSON {a: attempt, m: model, r: recheck, p: prompt's start}
--   P:sched:ready:<b>   ZSET  index -> arrival sequence (the batch's FIFO line of due sends)
--   P:sched:due         ZSET  "<b>:<index>" -> when it is due (ms, Redis TIME): delayed sends
--   P:sched:turns:<k>   ZSET  batch -> turn, for the batches of priority rank k with a ready send:
--                             the lowest turn is served next (round robin)
--   P:sched:round       STRING the turn counter; P:sched:seq the arrival counter
--   P:sched:stats       HASH  moved, max_late_ms (how late a due send was moved), fed
-- Every time is Redis TIME: a host whose clock is off changes no due time.
-- ARGV[1] is always the key prefix P; script arguments start at ARGV[2].
local P = ARGV[1]
local PRIORITIES = { high = 0, normal = 1, low = 2 }
local RANKS = 3
-- The ledger's sign of life for an item the scheduler holds (shared.scheduler.PARKED): later than
-- any real time, so the recovery sweep never takes a held send for a lost one.
local PARKED = 100000000000
local TERMINAL = { succeeded = true, failed = true, canceled = true, substituted = true }

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local K_DUE, K_ROUND, K_SEQ = P .. ':sched:due', P .. ':sched:round', P .. ':sched:seq'
local K_STATS, K_WAKE = P .. ':sched:stats', P .. ':sched:wake'
local function k_entry(b) return P .. ':sched:entry:' .. b end
local function k_ready(b) return P .. ':sched:ready:' .. b end
local function k_turns(rank) return P .. ':sched:turns:' .. rank end
local function k_batch(b) return P .. ':batch:' .. b end
local function k_item(b, i) return P .. ':batch:' .. b .. ':item:' .. i end
local function k_live(b) return P .. ':batch:' .. b .. ':live' end

-- The batch's priority rank (0 high, 1 normal, 2 low) from the options recorded with it; nil
-- when the batch is gone.
local function rank_of(b)
  local raw = redis.call('HGET', k_batch(b), 'options')
  if not raw then
    if redis.call('EXISTS', k_batch(b)) == 0 then return nil end
    return 1
  end
  local ok, options = pcall(cjson.decode, raw)
  if ok and type(options) == 'table' and PRIORITIES[options.priority] then
    return PRIORITIES[options.priority]
  end
  return 1
end

-- A batch with a ready send takes part in the round robin of its priority. A newcomer joins the
-- ring right before the batch served last: after every batch still waiting for its turn in this
-- round, before any that has had it.
local function join_turns(b, rank)
  if not redis.call('ZSCORE', k_turns(rank), b) then
    local round = tonumber(redis.call('GET', K_ROUND) or '0')
    redis.call('ZADD', k_turns(rank), round - 0.5, b)
  end
end

local function make_ready(b, i, rank)
  redis.call('ZADD', k_ready(b), 'NX', redis.call('INCR', K_SEQ), i)
  join_turns(b, rank)
end

-- One token on the feeder's wake list. The feeder's take empties the list (take.lua), so it
-- holds only the nudges of the moments since; at most 8 when no feeder runs. No expiry: the
-- take deletes the key, and a stale one holds at most 8 tokens (a few wakes of the next feeder).
local function wake_feeder()
  if redis.call('RPUSH', K_WAKE, '1') > 8 then redis.call('LTRIM', K_WAKE, -8, -1) end
end
