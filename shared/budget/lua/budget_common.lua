-- Prelude of the budget's scripts (shared/budget/lua/*.lua), and sent between the limiter's
-- common.lua and token.lua, so that a creation token and its reservation are one round trip (and
-- drop_settle.lua: a slot released and its attempt's spend settled).
-- KEYS: the budget's three keys are always the LAST three of a script's KEYS (the limiter
-- appends them to its own list); all carry the limiter's hash tag:
--   state  HASH  daily -> micro-USD per UTC day, or 'none' (cleared; absent: seeded from the
--                caller's REPLICATE_DAILY_BUDGET); limit:<batch> -> micro-USD;
--                spent:d:<day>, reserved:d:<day>, spent:b:<batch>, reserved:b:<batch> -> micro-USD
--                (<day> = whole days since 1970-01-01 UTC, from Redis TIME)
--   res    HASH  attempt marker "b:i:n" -> "<amount> <day> <batch>": one reservation per attempt
--   held   HASH  "<batch>:<index>" -> JSON {a: amount, n: attempt, s: scope, t: held at (s),
--                w: woken at (s)}: items that wait for room in a limit
-- Money is integer micro-dollars everywhere (whole numbers far below 2^53, exact in Lua).
local KB_STATE, KB_RES, KB_HELD = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]

local function budget_fail(message)
  error({err = 'ERR budget: ' .. message})
end

local function budget_now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function budget_day(now_s)
  return math.floor(now_s / 86400)
end

local function micro(value, what)
  local v = tonumber(value)
  if v == nil or v ~= v or v < 0 or v ~= math.floor(v) or v > 1e13 then
    budget_fail('bad amount for ' .. what .. ': ' .. tostring(value))
  end
  return v
end

local function bnum(field)
  return tonumber(redis.call('HGET', KB_STATE, field) or '0') or 0
end

-- The daily limit in force (nil: none). `default` ('' = none) seeds an absent field, like the
-- limiter's limits: the fleet's setting, until `producer budget set/clear` decides.
local function daily_limit(default)
  local v = redis.call('HGET', KB_STATE, 'daily')
  if not v then
    if default == nil or default == '' then return nil end
    redis.call('HSET', KB_STATE, 'daily', default)
    v = default
  end
  if v == 'none' then return nil end
  return tonumber(v)
end

local function batch_limit(batch)
  local v = redis.call('HGET', KB_STATE, 'limit:' .. batch)
  if not v then return nil end
  return tonumber(v)
end

-- Room left (micro-USD) under the daily budget / a batch's limit; nil = no limit.
local function daily_room(day, default)
  local limit = daily_limit(default)
  if limit == nil then return nil end
  return limit - bnum('spent:d:' .. day) - bnum('reserved:d:' .. day)
end

local function batch_room(batch)
  local limit = batch_limit(batch)
  if limit == nil then return nil end
  return limit - bnum('spent:b:' .. batch) - bnum('reserved:b:' .. batch)
end

-- A reservation request (JSON {m: marker, b: batch, a: amount, d: daily default}), decoded and
-- checked; nil for ''.
local function reservation_of(raw)
  if raw == nil or raw == '' then return nil end
  local r = cjson.decode(raw)
  if type(r.m) ~= 'string' or r.m == '' or type(r.b) ~= 'string' or r.b == '' then
    budget_fail('a reservation needs its attempt marker and batch')
  end
  r.a = micro(r.a, 'reservation')
  if r.d ~= nil and r.d ~= '' then micro(r.d, 'daily default') else r.d = '' end
  return r
end

-- Whether reservation r fits: nil when it does (or the attempt holds one already: a run asking
-- again, after a pause or a timeout, reserves nothing twice), else {scope, limit}.
local function budget_refusal(r, day)
  if redis.call('HEXISTS', KB_RES, r.m) == 1 then return nil end
  local room = daily_room(day, r.d)
  if room ~= nil and r.a > room then return {'daily', daily_limit(r.d)} end
  room = batch_room(r.b)
  if room ~= nil and r.a > room then return {'batch', batch_limit(r.b)} end
  return nil
end

-- Write reservation r (after budget_refusal said it fits). Returns 1 if written now.
local function budget_reserve(r, day)
  if redis.call('HEXISTS', KB_RES, r.m) == 1 then return 0 end
  redis.call('HSET', KB_RES, r.m, string.format('%d %d %s', r.a, day, r.b))
  redis.call('HINCRBY', KB_STATE, 'reserved:d:' .. day, string.format('%d', r.a))
  redis.call('HINCRBY', KB_STATE, 'reserved:b:' .. r.b, string.format('%d', r.a))
  return 1
end

-- A settle's request, checked before any write: the cost of attempt `marker` (micro-USD), nil
-- for '' (what was reserved).
local function settle_request(marker, cost_arg)
  if marker == nil or marker == '' then budget_fail('settle needs an attempt marker') end
  if cost_arg == nil or cost_arg == '' then return nil end
  return micro(cost_arg, 'cost')
end

-- Settle the reservation of attempt `marker` (settle.lua, and the limiter's drop_settle.lua): it
-- cost `cost` micro-USD (nil = what was reserved; 0 = nothing was created: it is released).
-- Spent counts on the day and batch the reservation was made for. Returns {1, amount reserved,
-- cost} or {0} when the attempt holds no reservation (settled already, or none was made).
local function budget_settle(marker, cost)
  local rec = redis.call('HGET', KB_RES, marker)
  if not rec then return {0} end
  local amount, day, batch = string.match(rec, '^(%d+) (%d+) (.+)$')
  amount = tonumber(amount)
  if cost == nil then cost = amount end
  redis.call('HDEL', KB_RES, marker)
  redis.call('HINCRBY', KB_STATE, 'reserved:d:' .. day, string.format('%d', -amount))
  redis.call('HINCRBY', KB_STATE, 'reserved:b:' .. batch, string.format('%d', -amount))
  if cost > 0 then
    redis.call('HINCRBY', KB_STATE, 'spent:d:' .. day, string.format('%d', cost))
    redis.call('HINCRBY', KB_STATE, 'spent:b:' .. batch, string.format('%d', cost))
  end
  return {1, string.format('%d', amount), string.format('%d', cost)}
end
