-- Prelude of every limiter script: lua_scripts.py sends it in front of each one (and maps Redis's
-- error lines back to this file or the script's own).
-- KEYS (same order for every script; all carry the limiter's hash tag, so one cluster slot):
--   1 holders    ZSET holder id -> lease expiry (ms, Redis time)
--   2 info       HASH holder id -> JSON (host, pid, task_id, ..., fence, acquired_at, epoch,
--                prediction_id, attempt, creating_at, orphaned_at, abandoned_at); also a
--                waiter id -> the record it queued with, so that a release can hand the slot
--                to it directly (wake()); inert until then (only ids in holders count)
--   3 fence      STRING counter, one INCR per grant
--   4 limits     HASH concurrency_limit, create_limit, read_limit, rate_window_ms
--   5 waiters    ZSET waiter id -> ticket (arrival order)
--   6 waiter_exp ZSET waiter id -> registration expiry (ms)
--   7 ticket     STRING counter for waiter tickets
--   8 epoch      HASH the limiter's own state, read with ONE HMGET per call (layout 2):
--                id: this incarnation of the limiter state (changes if Redis lost it);
--                layout: '2'; prune_at: no holder lease nor waiter registration expires before
--                this (ms; absent = now), so a call prunes only once it has passed;
--                slots_until, since: the state was lost while the fleet ran;
--                fresh, fresh_at: the current epoch was made by a caller that knew none.
--                Layout 1 kept the id in a STRING here and the recovery marks in KEYS[16]. The
--                HASH is what keeps old and new workers apart: a layout-1 script's GET on it fails
--                (WRONGTYPE) before it writes anything of a slot, so an old worker can never admit
--                beside new ones; a layout-2 script that finds the layout-1 STRING converts it
--                (same epoch, recovery marks carried over, prune due at once), see read_state().
--   9 creates    ZSET grant id -> grant time (ms); future scores are reservations
--  10 reads      ZSET grant id -> grant time (ms)
--  11 pause      HASH until (ms), reason
--  12 bypred     HASH prediction id -> holder id, for holders whose prediction is known
--  13 byattempt  HASH attempt marker -> holder id, for holders that took a creation token for it
--  14 woken      HASH waiter id -> when a freed slot woke it (ms): the hand-off latency, for
--                waiters woken without a grant (wake(): only those with no record)
--  15 rates      HASH create|read -> time of the newest grant dropped from that log (ms)
--  16 recovery   layout 1 only (its marks now live in KEYS[8]); read once when converting
-- then another owner's script's own keys from KEYS[17] (LimiterCore.call_with), and the budget's
-- three always last (budget_common.lua).
-- ARGV[1] is the caller's config JSON:
--   concurrency_limit, create_limit, read_limit, rate_window_ms: its own limits, written only
--     into fields the limits hash lacks (same names as the hash's fields);
--   wake_prefix: the wake lists' prefix; waiter_ttl_ms: a waiter registration's life;
--   orphan_ms: how long an orphaned slot stays counted at most; lease_ms; rate_margin_ms.
-- ARGV[2] is the epoch the calling process last saw ('' if it has seen none).
-- Script arguments start at ARGV[3]. Every script replies {epoch, result} (see reply()).
-- Wake lists are "<wake_prefix><process token>"; a waiter id is "<process token>/<n>".
-- Rule for every script: validate and decode all input first, write afterwards, so an error can
-- never leave a half-done change behind.
local K_HOLDERS, K_INFO, K_FENCE, K_LIMITS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_WAITERS, K_WAITER_EXP, K_TICKET, K_EPOCH = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_CREATES, K_READS, K_PAUSE, K_BYPRED = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_BYATTEMPT, K_WOKEN, K_RATES, K_RECOVERY = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local CFG = cjson.decode(ARGV[1])
local KNOWN_EPOCH = ARGV[2] or ''
local EPOCH = ''  -- set by sync_epoch(); sent back with every reply

local TIME = redis.call('TIME')  -- once per call: NOW, and the id of a new epoch
local NOW = tonumber(TIME[1]) * 1000 + tonumber(TIME[2]) / 1000

local function fail(message)
  error({err = 'ERR limiter: ' .. message})
end

-- Numbers must cross into Redis as strings: Lua's tostring keeps 14 digits, which loses the
-- sub-millisecond part of a ms timestamp; replies convert numbers to integers.
local function fmt(x) return string.format('%.3f', x) end
local function fmt_up(x) return string.format('%.3f', math.ceil(x * 1000) / 1000) end

local function in_chunks(cmd, key, list)
  for i = 1, #list, 500 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 499, #list)))
  end
end

-- --- limits ---------------------------------------------------------------------------------
-- The same bounds as limiter.py's LIMIT_BOUNDS. Out-of-range values would make later scripts
-- fail (a ZRANGE to 1e20) or hold everyone back for ever, so nothing outside them is ever stored.
local MAX_WINDOW_MS = 86400000
local LIMIT_FIELDS = {'concurrency_limit', 'create_limit', 'read_limit', 'rate_window_ms'}
local LIMIT_BOUNDS = {  -- field -> {min, max, whole numbers only}
  concurrency_limit = {1, 100000, true},
  create_limit = {1, 1000000, true},
  read_limit = {1, 1000000, true},
  rate_window_ms = {1000, MAX_WINDOW_MS, false},
}

local function valid_limit(field, value)
  local b, v = LIMIT_BOUNDS[field], tonumber(value)
  return b ~= nil and v ~= nil and v == v and v >= b[1] and v <= b[2]
    and (not b[3] or v == math.floor(v))
end

local function limit_str(v)
  if v == math.floor(v) then return string.format('%d', v) end
  return fmt(v)
end

-- Limits live in Redis so a change reaches every host at once. A field that is absent (first
-- start, or Redis lost it) is taken from the caller's settings, and written unless `readonly`:
-- every worker thus seeds from its OWN settings, never from whoever ran `limits set`.
local function limits(readonly)
  local v = redis.call('HMGET', K_LIMITS, unpack(LIMIT_FIELDS))
  local out, seeds = {}, {}
  for i, field in ipairs(LIMIT_FIELDS) do
    local value = v[i]
    if not valid_limit(field, value) then  -- absent (or stored by an older, unchecked version)
      value = CFG[field]
      if not valid_limit(field, value) then
        fail('the caller\'s default ' .. field .. ' ' .. tostring(value) .. ' is out of range')
      end
      seeds[#seeds + 1] = field
      seeds[#seeds + 1] = limit_str(value)
    end
    out[field] = tonumber(value)
  end
  if #seeds > 0 and not readonly then
    redis.call('HSET', K_LIMITS, unpack(seeds))
  end
  return out
end

-- --- pause -----------------------------------------------------------------------------------
-- Creations stop on every host until `untl` (ms); a longer pause already set wins.
local function set_pause(untl, reason)
  local cur = redis.call('HGET', K_PAUSE, 'until')
  if cur and tonumber(cur) >= untl then return tonumber(cur) end
  redis.call('HSET', K_PAUSE, 'until', fmt(untl), 'reason', reason, 'set_at', fmt(NOW))
  redis.call('PEXPIRE', K_PAUSE, math.ceil(untl - NOW) + 60000)
  return untl
end

-- --- epoch and recovery after a state loss ---------------------------------------------------
-- How long evidence of the state before a loss can still matter: live holders renew within a
-- lease, and a creation older than window + margin leaves every window.
local function loss_horizon(L)
  return math.max(CFG.lease_ms, L.rate_window_ms + CFG.rate_margin_ms)
end

-- The state hash (KEYS[8]), read once per call by sync_epoch() (every script calls it first)
-- and kept in step with this call's own writes (nothing else writes while a script runs).
local LAYOUT = '2'
local STATE_FIELDS = {'id', 'layout', 'prune_at', 'slots_until', 'fresh', 'fresh_at'}
local ST = {}  -- field -> string, or false when absent
local PRUNE_AT = 0  -- ST.prune_at as a number (0 when absent: a prune is due)

local function state_set(...)
  local kv = {...}
  redis.call('HSET', K_EPOCH, unpack(kv))
  for i = 1, #kv, 2 do ST[kv[i]] = kv[i + 1] end
end

-- Layout 1 (before issue 16.4) kept the epoch in a STRING at KEYS[8] and the recovery marks in
-- KEYS[16]: convert them in place, once. From then on layout-1 scripts fail on the HASH.
local function convert_layout_1()
  local e = redis.call('GET', K_EPOCH)
  local r = redis.call('HMGET', K_RECOVERY, 'slots_until', 'since', 'fresh', 'fresh_at')
  redis.call('DEL', K_EPOCH, K_RECOVERY)
  local kv = {'id', e, 'layout', LAYOUT, 'prune_at', '0'}
  local names = {'slots_until', 'since', 'fresh', 'fresh_at'}
  for i, name in ipairs(names) do
    if r[i] then kv[#kv + 1] = name; kv[#kv + 1] = r[i] end
  end
  redis.call('HSET', K_EPOCH, unpack(kv))
end

local function read_state()
  local v = redis.pcall('HMGET', K_EPOCH, unpack(STATE_FIELDS))
  if v.err then
    if redis.call('TYPE', K_EPOCH).ok ~= 'string' then fail('state key: ' .. v.err) end
    convert_layout_1()
    v = redis.call('HMGET', K_EPOCH, unpack(STATE_FIELDS))
  end
  for i, field in ipairs(STATE_FIELDS) do ST[field] = v[i] end
  if ST.id and ST.layout ~= LAYOUT then
    fail('the limiter state has layout ' .. tostring(ST.layout) .. ', these scripts know ' .. LAYOUT
         .. ' only: do not mix worker versions')
  end
  PRUNE_AT = tonumber(ST.prune_at or '0') or 0
end

local function slots_until() return ST.slots_until end

-- Redis forgot the state while the fleet ran (restart without persistence): the holders still
-- running at Replicate are unknown until they renew (within a lease), and the creations of the
-- last window are unknown for good. So for one lease no new slot is granted (renewals put the
-- live holders back first), and creations pause for window + margin.
local function begin_recovery(L)
  state_set('slots_until', fmt(NOW + CFG.lease_ms), 'since', fmt(NOW))
  redis.call('HDEL', K_EPOCH, 'fresh', 'fresh_at')
  ST.fresh, ST.fresh_at = false, false
  set_pause(NOW + L.rate_window_ms + CFG.rate_margin_ms, 'limiter state lost; rate log rebuilt')
end

-- The epoch in force, made if absent. A renewing holder compares it with its own: equal and
-- missing means expired or revoked, different means Redis forgot it. The caller's last seen
-- epoch tells a first start (nobody knew one: no delay) from a loss (recovery). If the first
-- caller after a loss knew no epoch (a process that just started), the loss is recognised at
-- the first call of one that did, as long as that can still matter (loss_horizon).
local function sync_epoch(L)
  read_state()
  local e = ST.id
  if not e then
    e = TIME[1] .. '.' .. TIME[2]
    state_set('id', e, 'layout', LAYOUT, 'prune_at', '0')
    PRUNE_AT = 0
    if KNOWN_EPOCH ~= '' then
      begin_recovery(L)
    else
      state_set('fresh', e, 'fresh_at', fmt(NOW))
    end
  elseif KNOWN_EPOCH ~= '' and KNOWN_EPOCH ~= e then
    if ST.fresh == e and NOW - tonumber(ST.fresh_at) <= loss_horizon(L) then begin_recovery(L) end
  end
  EPOCH = e
  return e
end

-- ms left of the slot freeze that follows a state loss (0 when none).
local function recovery_ms_left()
  local u = slots_until()
  if u and tonumber(u) > NOW then return tonumber(u) - NOW end
  return 0
end

-- True once, at the first call after the freeze has ended: that call wakes the line (waiters
-- that queued before the loss was recognised were never told when the freeze ends).
local function thawed()
  local u = slots_until()
  if u and tonumber(u) <= NOW then
    redis.call('HDEL', K_EPOCH, 'slots_until')
    ST.slots_until = false
    return true
  end
  return false
end

-- Every script answers {epoch, result}: the caller's process remembers the epoch it last saw.
local function reply(result)
  return {EPOCH, result}
end

-- --- holders ---------------------------------------------------------------------------------
-- Fences start from Redis time in microseconds, so they keep increasing across a state loss.
-- (One INCR when the counter exists; a 1 means it did not, and it is seeded then.)
local function next_fence()
  local fence = redis.call('INCR', K_FENCE)
  if fence == 1 then
    fence = tonumber(string.format('%.0f', NOW * 1000)) + 1
    redis.call('SET', K_FENCE, string.format('%.0f', fence))
  end
  return fence
end

local function decode_info(id)
  local raw = redis.call('HGET', K_INFO, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- A holder's info, and its prediction and attempt in the indexes (so that finding the holder of
-- a prediction or an attempt costs one lookup, whatever the number of slots).
local function save_holder(id, rec)
  redis.call('HSET', K_INFO, id, cjson.encode(rec))
  if type(rec.prediction_id) == 'string' then
    redis.call('HSET', K_BYPRED, rec.prediction_id, id)
  end
  if type(rec.attempt) == 'string' then
    redis.call('HSET', K_BYATTEMPT, rec.attempt, id)
  end
end

-- Drop an index entry only if it still points at this holder (an adopter may own it now).
local function unindex(key, name, id)
  if type(name) == 'string' and redis.call('HGET', key, name) == id then
    redis.call('HDEL', key, name)
  end
end

-- Remove holders with their info and index entries. Returns how many of them were holders.
local function remove_holders(ids)
  local held = 0
  for _, id in ipairs(ids) do
    local rec = decode_info(id)
    if rec then
      unindex(K_BYPRED, rec.prediction_id, id)
      unindex(K_BYATTEMPT, rec.attempt, id)
    end
    held = held + redis.call('ZREM', K_HOLDERS, id)
    redis.call('HDEL', K_INFO, id)
  end
  return held
end

-- Record the prediction id in a holder's info and index (set_prediction.lua, and the workers'
-- attempt_record_slot.lua). Keeps the attempt marker. Never brings back a holder that is gone
-- (released, expired, force-released): returns 1 if recorded, 0 if the holder is not counted.
local function show_prediction(id, prediction_id)
  local rec = redis.call('ZSCORE', K_HOLDERS, id) and decode_info(id)
  if not rec then return 0 end
  unindex(K_BYPRED, rec.prediction_id, id)
  rec.prediction_id = prediction_id
  save_holder(id, rec)
  return 1
end

-- A holder that may have a prediction running at Replicate: it has recorded one, or it took a
-- creation token for an attempt (it may have died inside the POST, the prediction unknown).
local function may_have_prediction(rec)
  return type(rec.prediction_id) == 'string' or type(rec.attempt) == 'string'
end

-- Every score written into holders or waiter_exp goes through here: prune_at stays a lower
-- bound of both sets' earliest expiry, which is what lets prune() skip its reads while nothing
-- can have expired. (Renewals move scores later: a bound that is too early only costs one
-- prune that finds nothing and moves the bound.)
local function note_expiry(at)
  if at < PRUNE_AT then
    PRUNE_AT = at
    state_set('prune_at', fmt(at))
  end
end

-- Keep the slot counted, marked orphaned, for at most CFG.orphan_ms ms.
local function orphan(id, rec)
  rec.orphaned_at = fmt(NOW)
  save_holder(id, rec)
  note_expiry(NOW + CFG.orphan_ms)
  redis.call('ZADD', K_HOLDERS, fmt(NOW + CFG.orphan_ms), id)
end

-- A holder whose lease ran out died or was cut off. If a prediction of its may be in flight, it
-- still runs at Replicate and still counts against the account: the slot stays, orphaned, until
-- a resuming worker adopts it (adopt.lua), the prediction is reported over (settle.lua), or
-- CFG.orphan_ms ms pass (Replicate ends every prediction within its timeout). Returns how many slots
-- were freed.
local function prune_holders()
  local dead = redis.call('ZRANGEBYSCORE', K_HOLDERS, '-inf', fmt(NOW))
  local gone = {}
  for _, id in ipairs(dead) do
    local rec = decode_info(id) or {}
    if may_have_prediction(rec) and rec.orphaned_at == nil then
      orphan(id, rec)
    else
      gone[#gone + 1] = id
    end
  end
  return remove_holders(gone)
end

-- Does holder `id` still hold its lease, as granted with `fence`? Counted, not past its expiry
-- (a lease that ran out is dead even before a prune removes it), not an orphan (its holder was
-- cut off or abandoned it: a renewal may take an orphan back, a creation must not go ahead on
-- one) and the same grant (the fence). What a creation must prove right before its POST
-- (token.lua; workers/lua/attempt_post.lua checks the same on the same keys).
local function holds(id, fence)
  local expiry = redis.call('ZSCORE', K_HOLDERS, id)
  if not expiry or tonumber(expiry) < NOW then return false end
  local rec = decode_info(id)
  if not rec or rec.orphaned_at ~= nil or rec.abandoned_at ~= nil then return false end
  return (fence == '' or tostring(rec.fence) == fence) and rec
end

-- The counted holder a name in an index points at, or nil.
local function counted_holder(index, name)
  if name == nil or name == '' then return nil end
  local id = redis.call('HGET', index, name)
  if id and redis.call('ZSCORE', K_HOLDERS, id) then return id end
  return nil
end

-- The holder counted for a prediction, else for an attempt (at most one: adopt replaces).
local function holder_of(prediction_id, attempt)
  return counted_holder(K_BYPRED, prediction_id) or counted_holder(K_BYATTEMPT, attempt)
end

-- --- waiters ---------------------------------------------------------------------------------
local function forget_waiters(ids)
  if #ids > 0 then
    in_chunks('ZREM', K_WAITERS, ids)
    in_chunks('ZREM', K_WAITER_EXP, ids)
    in_chunks('HDEL', K_WOKEN, ids)
    in_chunks('HDEL', K_INFO, ids)  -- their records (never a holder's: a grant ends the wait)
  end
end

-- A waiter that died or stopped refreshing is dropped, so it never blocks the line.
local function prune_waiters()
  local dead = redis.call('ZRANGEBYSCORE', K_WAITER_EXP, '-inf', fmt(NOW))
  forget_waiters(dead)
  return #dead
end

local FAR = 1e15  -- prune_at when both sets are empty (ms: the year 33658)

-- Expired holders and waiters out (prune_holders, prune_waiters), but only once prune_at has
-- passed: before it nothing can have expired, and a call costs no read at all. `force`: prune
-- regardless (set_limits). Afterwards prune_at is the earliest expiry left. Returns how many
-- slots and places were freed.
local function prune(force)
  if not force and PRUNE_AT > NOW then return 0 end
  local n = prune_holders() + prune_waiters()
  local at = FAR
  local h = redis.call('ZRANGE', K_HOLDERS, 0, 0, 'WITHSCORES')
  if #h > 0 then at = math.min(at, tonumber(h[2])) end
  local w = redis.call('ZRANGE', K_WAITER_EXP, 0, 0, 'WITHSCORES')
  if #w > 0 then at = math.min(at, tonumber(w[2])) end
  PRUNE_AT = at
  state_set('prune_at', fmt(at))
  return n
end

local function process_of(member)
  return string.match(member, '^(.*)/[^/]*$') or member
end

-- --- the line's fair order (acquire.lua places waiters; grants, here and there, serve them) ---
local K_FAIR = K_WAITERS .. ':fair'  -- HASH vt:<band> (tag served last), f:<band>:<batch> (its last tag)

-- A waiter's score is ((band * 1e9) + tag) * 1e6 + ticket (acquire.lua place()): the tag served
-- last in its band moves on to its tag.
local function served_tag(score)
  local s = tonumber(score)
  local band = math.floor(s / 1e15)
  local tag = math.floor(s / 1e6) - band * 1e9
  local key = 'vt:' .. band
  if tag > tonumber(redis.call('HGET', K_FAIR, key) or '0') then redis.call('HSET', K_FAIR, key, tag) end
end

-- After grants left the line: an empty line starts its tags over.
local function line_served()
  if redis.call('ZCARD', K_WAITERS) == 0 then redis.call('DEL', K_FAIR) end
end

-- The first `free` waiters get the freed slots, in this call (direct hand-off, issue 16.4): each
-- becomes a holder (new fence, the record it queued with) with a lease of min(waiter_ttl,
-- lease), and the grant travels in the wake token on its process's wake list (a list, not
-- pub/sub: it waits there until the listener pops it), so the woken waiter does not call acquire
-- again; its keeper renews the short lease to a full one. A waiter that died just before holds
-- the slot only that short lease (a dead waiter blocked the head of the line as long before).
-- The slots are counted like every grant (limit - ZCARD holders), so a newcomer's acquire in the
-- same instant sees them taken. A waiter without a record (none in layout 2) is only woken, as
-- before: its acquire call takes the slot, and the wake's moment is kept (HSETNX) as its hand-off
-- latency. While the slots are frozen after a state loss nobody is admitted, so nobody is woken:
-- waiters re-check when the freeze ends. The line is read one waiter past the free slots: if
-- that one exists, the line goes on after the grants, and line_served()'s ZCARD is not needed.
local function wake(concurrency_limit)
  if recovery_ms_left() > 0 then return 0 end
  local free = concurrency_limit - redis.call('ZCARD', K_HOLDERS)
  if free <= 0 then return 0 end
  local first = redis.call('ZRANGE', K_WAITERS, 0, free, 'WITHSCORES')
  if #first == 0 then return 0 end
  local more = #first > 2 * free  -- a waiter beyond the free slots (not woken now)
  if more then  -- drop its member and score
    first[#first] = nil
    first[#first] = nil
  end
  local now_s = fmt(NOW)
  local ttl = math.min(CFG.waiter_ttl_ms, CFG.lease_ms)
  local expires = fmt(NOW + ttl)
  local granted = {}
  for i = 1, #first, 2 do
    local w = first[i]
    local chan = CFG.wake_prefix .. process_of(w)
    local raw = redis.call('HGET', K_INFO, w)
    if raw then
      local rec = cjson.decode(raw)
      rec.fence = string.format('%.0f', next_fence())
      rec.acquired_at = now_s
      rec.epoch = EPOCH
      rec.handed_over = 1  -- (acquire.lua: should the waiter call again before it sees the token)
      save_holder(w, rec)
      redis.call('ZADD', K_HOLDERS, expires, w)
      served_tag(first[i + 1])
      granted[#granted + 1] = w
      redis.call('RPUSH', chan, cjson.encode({w = w, f = rec.fence, at = now_s, e = EPOCH, x = expires}))
    else
      redis.call('RPUSH', chan, w)
      redis.call('HSETNX', K_WOKEN, w, now_s)
    end
    redis.call('PEXPIRE', chan, 60000)
  end
  if #granted > 0 then
    note_expiry(NOW + ttl)
    in_chunks('ZREM', K_WAITERS, granted)
    in_chunks('ZREM', K_WAITER_EXP, granted)
    -- Empty now only if nobody was beyond and every one woken was granted: as line_served().
    if not more and #granted == #first / 2 then redis.call('DEL', K_FAIR) end
  end
  return #first / 2
end

local function ms_to_earliest_expiry()
  local e = redis.call('ZRANGE', K_HOLDERS, 0, 0, 'WITHSCORES')
  if #e == 0 then return -1 end
  return tonumber(e[2]) - NOW
end

-- --- rates: exact sliding-window logs ---------------------------------------------------------
local RATE_LOG = {create = K_CREATES, read = K_READS}

local function rate_limit(kind, L)
  if kind == 'create' then return L.create_limit end
  return L.read_limit
end

-- Drop grants that have left the window, but always keep the `keep` (= limit) most recent, and
-- remember the time of the newest grant dropped. So a window grown at run time still finds the
-- grants it needs (the limit-th most recent is never dropped), and a limit grown at run time
-- knows an upper bound for the ones that were dropped. Returns how many grants the log keeps
-- (next_grant_time's `count`: one ZCARD per call), and counts the old ones only when the log is
-- longer than `keep`.
-- The marker is a grant time that has passed (only grants at least `span` old are dropped), so it
-- matters at most MAX_WINDOW_MS + margin from now: its expiry is set when it is written (the
-- EXISTS + PTTL + PEXPIRE per grant of layout 1 kept it alive no longer than needed either).
local function prune_log(kind, keep, span)
  local log = RATE_LOG[kind]
  local count = redis.call('ZCARD', log)
  if count <= keep then return count end
  local n = math.min(redis.call('ZCOUNT', log, '-inf', fmt(NOW - span)), count - keep)
  if n > 0 then
    local newest = redis.call('ZRANGE', log, n - 1, n - 1, 'WITHSCORES')
    redis.call('HSET', K_RATES, kind, newest[2])
    redis.call('PEXPIRE', K_RATES, MAX_WINDOW_MS + CFG.rate_margin_ms + 60000)
    redis.call('ZREMRANGEBYRANK', log, 0, n - 1)
    count = count - n
  end
  return count
end

-- The earliest moment `at` >= now (and >= every grant already in the log, so grants keep
-- arrival order) at which the limit-th most recent grant lies at least `span` before `at`: one
-- more grant then leaves every window of `span` with at most `limit` grants. prune_log keeps the
-- limit most recent, so the log holds fewer only if the limit grew since (or a reservation was
-- given back): the missing grants were dropped, hence are no later than the newest dropped one,
-- a bound that is safe, and exact unless the limit grew.
local function next_grant_time(kind, limit, span, count)
  local log = RATE_LOG[kind]
  count = count or redis.call('ZCARD', log)
  local at, rth = NOW, nil
  if count >= limit then
    rth = redis.call('ZRANGE', log, count - limit, count - limit, 'WITHSCORES')[2]
  else
    rth = redis.call('HGET', K_RATES, kind)
  end
  if rth then at = math.max(at, tonumber(rth) + span) end
  local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #last > 0 then at = math.max(at, tonumber(last[2])) end
  return at
end

-- The log lives a day past its last grant: a window may grow to a day. (The drop markers get
-- their expiry when written, prune_log.)
local function keep_rate_state(kind, last_at)
  local ttl = math.ceil(math.max(last_at - NOW, 0) + MAX_WINDOW_MS + CFG.rate_margin_ms) + 60000
  redis.call('PEXPIRE', RATE_LOG[kind], ttl)
end

-- --- release ---------------------------------------------------------------------------------
-- Release holder `id`, or withdraw it from the line (drop.lua, drop_settle.lua); idempotent.
-- Wakes whoever is next. Returns held (1: it was a holder), waited (1: it was a waiter).
local function drop_member(id, L)
  local pruned = prune()
  if thawed() then pruned = pruned + 1 end  -- wake the line once the freeze is over
  local held = remove_holders({id})
  local waited = 0
  if held == 0 then  -- a holder is no waiter: its grant took it out of the line (acquire.lua)
    waited = redis.call('ZREM', K_WAITERS, id)
    redis.call('ZREM', K_WAITER_EXP, id)
    redis.call('HDEL', K_WOKEN, id)
  end
  if held + waited + pruned > 0 then wake(L.concurrency_limit) end
  return held, waited
end
