-- Change limits for every host at once. ARGV[3] JSON {field: value} with only the fields to
-- change; ARGV[4] the caller's rate margin (ms). The other fields are left as they are: absent
-- ones are seeded by each worker from its own settings, never from the caller's.
-- Every value is checked before anything is written (limiter.py checks them too).
-- Growing the concurrency limit wakes waiters at once; shrinking lets holders finish and admits no
-- one until in_use < new limit (acquire compares against the limit on every call).
-- A rate change re-plans the reservations still ahead (callers sleeping to a grant time) under
-- the new limits, never earlier than they were: each caller re-confirms its reservation when it
-- wakes (confirm.lua) and learns its new time, so from now on the new limits hold exactly.
-- Returns {concurrency_limit, create_limit, read_limit, rate_window_ms, reservations moved} as stored; a
-- field no worker has seeded yet is reported as the caller's default.
local changes = cjson.decode(ARGV[3])
local margin_ms = tonumber(ARGV[4])
if type(changes) ~= 'table' then fail('limits must be a JSON object') end
local writes = {}
for field, value in pairs(changes) do
  if LIMIT_BOUNDS[field] == nil then fail('unknown limit ' .. tostring(field)) end
  if type(value) ~= 'number' or not valid_limit(field, value) then
    local b = LIMIT_BOUNDS[field]
    fail(field .. ' must be ' .. (b[3] and 'a whole number ' or '') .. 'from ' .. b[1] .. ' to '
         .. b[2] .. ', got ' .. tostring(value))
  end
  writes[#writes + 1] = field
  writes[#writes + 1] = limit_str(value)
end
if not margin_ms or margin_ms < 0 then fail('rate margin must be >= 0') end

local L = limits(true)
sync_epoch(L)
if #writes > 0 then redis.call('HSET', K_LIMITS, unpack(writes)) end
L = limits(true)

-- Reservations ahead of now, in grant order, placed again one by one by the same rule as new
-- grants, each no earlier than before (its caller sleeps until then anyway).
local function replan(kind, limit, span)
  local log = RATE_LOG[kind]
  local ahead = redis.call('ZRANGEBYSCORE', log, '(' .. fmt(NOW), '+inf', 'WITHSCORES')
  if #ahead == 0 then return 0 end
  local members = {}
  for i = 1, #ahead, 2 do members[#members + 1] = ahead[i] end
  in_chunks('ZREM', log, members)
  local moved, at = 0, NOW
  for i = 1, #ahead, 2 do
    local before = tonumber(ahead[i + 1])
    at = math.max(before, next_grant_time(kind, limit, span))
    if at > before then moved = moved + 1 end
    redis.call('ZADD', log, fmt_up(at), ahead[i])
  end
  keep_rate_state(kind, at)
  return moved
end

local moved, span = 0, L.rate_window_ms + margin_ms
if changes.create_limit or changes.rate_window_ms then moved = moved + replan('create', L.create_limit, span) end
if changes.read_limit or changes.rate_window_ms then moved = moved + replan('read', L.read_limit, span) end
if changes.concurrency_limit then
  prune(true)
  wake(L.concurrency_limit)
end
return reply({L.concurrency_limit, L.create_limit, L.read_limit, fmt(L.rate_window_ms), moved})
