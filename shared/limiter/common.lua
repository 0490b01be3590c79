-- Prelude shared by every limiter script (prepended by scripts.py before register_script).
-- KEYS (same order for every script; all carry the limiter's hash tag, so one cluster slot):
--   1 holders    ZSET holder id -> lease expiry (ms, Redis time)
--   2 info       HASH holder id -> JSON (host, pid, task_id, ..., fence, acquired_at, epoch)
--   3 fence      STRING counter, one INCR per grant
--   4 limits     HASH concurrency, create_limit, read_limit, window_ms
--   5 waiters    ZSET waiter id -> ticket (arrival order)
--   6 waiter_exp ZSET waiter id -> registration expiry (ms)
--   7 ticket     STRING counter for waiter tickets
--   8 epoch      STRING id of this incarnation of the limiter state (changes if Redis lost it)
--   9 creates    ZSET grant id -> grant time (ms); future scores are reservations
--  10 reads      ZSET grant id -> grant time (ms)
--  11 pause      HASH until (ms), reason
--  12 bypred     HASH prediction id -> holder id, for holders whose prediction is known
-- ARGV[1] is the caller's config JSON: c, cl, rl, w (defaults for the limits, used only when the
-- limits hash is absent), wp (wake list prefix), wt (waiter registration ttl, ms), ot (how long an
-- orphaned slot stays counted at most, ms).
-- Wake lists are "<wp><process token>"; a waiter id is "<process token>/<n>".
local K_HOLDERS, K_INFO, K_FENCE, K_LIMITS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_WAITERS, K_WAITER_EXP, K_TICKET, K_EPOCH = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_CREATES, K_READS, K_PAUSE, K_BYPRED = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local CFG = cjson.decode(ARGV[1])

local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local NOW = redis_now_ms()

-- Numbers must cross into Redis as strings: Lua's tostring keeps 14 digits, which loses the
-- sub-millisecond part of a ms timestamp; replies convert numbers to integers.
local function fmt(x) return string.format('%.3f', x) end
local function fmt_up(x) return string.format('%.3f', math.ceil(x * 1000) / 1000) end

local function in_chunks(cmd, key, list)
  for i = 1, #list, 500 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 499, #list)))
  end
end

-- Limits live in Redis so a change reaches every host at once; seeded from settings if absent.
local function limits(readonly)
  local v = redis.call('HMGET', K_LIMITS, 'concurrency', 'create_limit', 'read_limit', 'window_ms')
  if not (v[1] and v[2] and v[3] and v[4]) then
    if readonly then
      v = {v[1] or CFG.c, v[2] or CFG.cl, v[3] or CFG.rl, v[4] or CFG.w}
    else
      redis.call('HSETNX', K_LIMITS, 'concurrency', CFG.c)
      redis.call('HSETNX', K_LIMITS, 'create_limit', CFG.cl)
      redis.call('HSETNX', K_LIMITS, 'read_limit', CFG.rl)
      redis.call('HSETNX', K_LIMITS, 'window_ms', CFG.w)
      v = redis.call('HMGET', K_LIMITS, 'concurrency', 'create_limit', 'read_limit', 'window_ms')
    end
  end
  return {concurrency = tonumber(v[1]), create_limit = tonumber(v[2]),
          read_limit = tonumber(v[3]), window_ms = tonumber(v[4])}
end

-- A fresh epoch after the state vanished (Redis restarted without persistence) lets a renewing
-- holder tell "my lease expired / was revoked" (same epoch) from "Redis forgot me" (new epoch).
local function epoch()
  local e = redis.call('GET', K_EPOCH)
  if not e then
    local t = redis.call('TIME')
    e = t[1] .. '.' .. t[2]
    redis.call('SET', K_EPOCH, e)
  end
  return e
end

-- Fences start from Redis time in microseconds, so they keep increasing across a state loss.
local function next_fence()
  if redis.call('EXISTS', K_FENCE) == 0 then
    redis.call('SET', K_FENCE, string.format('%.0f', NOW * 1000))
  end
  return redis.call('INCR', K_FENCE)
end

-- A holder's info, and its prediction in the index (so that finding the holder of a prediction
-- costs one lookup, whatever the number of slots).
local function save_holder(id, rec)
  redis.call('HSET', K_INFO, id, cjson.encode(rec))
  if type(rec.prediction_id) == 'string' then
    redis.call('HSET', K_BYPRED, rec.prediction_id, id)
  end
end

-- Remove holders with their info and index entries. Returns how many of them were holders.
local function remove_holders(ids)
  local held = 0
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', K_INFO, id)
    if raw then
      local pid = cjson.decode(raw).prediction_id
      if type(pid) == 'string' and redis.call('HGET', K_BYPRED, pid) == id then
        redis.call('HDEL', K_BYPRED, pid)
      end
    end
    held = held + redis.call('ZREM', K_HOLDERS, id)
    redis.call('HDEL', K_INFO, id)
  end
  return held
end

-- A holder whose lease ran out died or was cut off. If its prediction was in flight, that
-- prediction still runs at Replicate and still counts against the account: the slot stays,
-- marked orphaned, until a resuming worker adopts it (adopt.lua), the prediction is reported over
-- (settle.lua), or CFG.ot ms pass (Replicate ends every prediction within its timeout). Returns
-- how many slots were freed.
local function prune_holders()
  local dead = redis.call('ZRANGEBYSCORE', K_HOLDERS, '-inf', fmt(NOW))
  local gone = {}
  for _, id in ipairs(dead) do
    local rec = cjson.decode(redis.call('HGET', K_INFO, id) or '{}')
    if type(rec.prediction_id) == 'string' and rec.orphaned_at == nil then
      rec.orphaned_at = fmt(NOW)
      save_holder(id, rec)
      redis.call('ZADD', K_HOLDERS, fmt(NOW + CFG.ot), id)
    else
      gone[#gone + 1] = id
    end
  end
  return remove_holders(gone)
end

-- The holder counted for a prediction (at most one: adopt replaces, never adds), or nil.
local function holder_of_prediction(prediction_id)
  local id = redis.call('HGET', K_BYPRED, prediction_id)
  if id and redis.call('ZSCORE', K_HOLDERS, id) then return id end
  return nil
end

-- A waiter that died or stopped refreshing is dropped, so it never blocks the line.
local function prune_waiters()
  local dead = redis.call('ZRANGEBYSCORE', K_WAITER_EXP, '-inf', fmt(NOW))
  if #dead > 0 then
    in_chunks('ZREM', K_WAITERS, dead)
    in_chunks('ZREM', K_WAITER_EXP, dead)
  end
  return #dead
end

local function process_of(member)
  return string.match(member, '^(.*)/[^/]*$') or member
end

-- Tell the first `free` waiters that their turn may have come: one token on their process's
-- wake list (a list, not pub/sub: a token waits there until the listener pops it).
local function wake(concurrency)
  local free = concurrency - redis.call('ZCARD', K_HOLDERS)
  if free <= 0 then return 0 end
  local first = redis.call('ZRANGE', K_WAITERS, 0, free - 1)
  for _, w in ipairs(first) do
    local chan = CFG.wp .. process_of(w)
    redis.call('RPUSH', chan, w)
    redis.call('PEXPIRE', chan, 60000)
  end
  return #first
end

local function ms_to_earliest_expiry()
  local e = redis.call('ZRANGE', K_HOLDERS, 0, 0, 'WITHSCORES')
  if #e == 0 then return -1 end
  return tonumber(e[2]) - NOW
end
