-- The feeder's one round trip: move the due sends into their batches' lines, then take up to
-- ARGV[2] sends, but only as many as keep the broker's lists (ARGV[4..]) at ARGV[3] messages at
-- most: highest priority first, round robin among the batches of one priority, each batch's
-- line in arrival order. A taken send leaves the scheduler and its item gets a sign of life now
-- (the recovery sweep re-sends it if no message follows: a feeder killed mid-send loses nothing).
-- Sends for items that ended meanwhile (canceled, finished) are dropped here.
-- Returns {ms until the next due send (-1: none), then per send: batch, index, entry JSON, rank}.
local want, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = now_ms()
-- The nudges so far are answered by this take (it reads the broker's lists and the lines after
-- them, atomically): the feeder sleeps until the next one instead of waking once per token.
redis.call('DEL', K_WAKE)

-- 1. Due sends join their batch's line (at most 1000 per call; the rest at the next). The first
-- delayed send is read first: when it is not due yet (most takes), it is also the next due time
-- returned at the end, and nothing else of the due zset is read.
local cutoff = string.format('%.3f', t)
local first_due = redis.call('ZRANGE', K_DUE, 0, 0, 'WITHSCORES')
local due = {}
if #first_due > 0 and tonumber(first_due[2]) <= tonumber(cutoff) then
  due = redis.call('ZRANGEBYSCORE', K_DUE, '-inf', cutoff, 'WITHSCORES', 'LIMIT', 0, 1000)
end
local late = #due > 0 and tonumber(redis.call('HGET', K_STATS, 'max_late_ms') or '0') or 0
for n = 1, #due, 2 do
  local member, at = due[n], tonumber(due[n + 1])
  redis.call('ZREM', K_DUE, member)
  local b, i = string.match(member, '^(.*):(%d+)$')
  local rank = b and rank_of(b)
  if rank ~= nil and redis.call('HEXISTS', k_entry(b), i) == 1 then
    make_ready(b, i, rank)
    late = math.max(late, t - at)
    redis.call('HINCRBY', K_STATS, 'moved', 1)
  elseif b then
    redis.call('HDEL', k_entry(b), i)
  end
end
if #due > 0 then redis.call('HSET', K_STATS, 'max_late_ms', string.format('%.3f', late)) end

-- 2. Room in the broker: read once there is something to take (a feeder woken for nothing
-- does not read the broker's lists).
local function room_in_broker()
  local queued = 0
  for n = 4, #ARGV do queued = queued + redis.call('LLEN', ARGV[n]) end
  return math.min(want, window - queued)
end

-- 3. Take, in turn. Nothing joins a ring during this loop, so a rank found empty stays empty:
-- the search for the next batch starts at the first rank not known empty.
local out = {}
local taken, guard, first, room = 0, 0, 0, want
while taken < room and guard < room + 1000 do
  guard = guard + 1
  local b, rank = nil, nil
  for k = first, RANKS - 1 do
    local top = redis.call('ZRANGE', k_turns(k), 0, 0)
    if #top > 0 then b, rank = top[1], k; break end
    first = k + 1
  end
  if b == nil then break end
  if guard == 1 then
    room = room_in_broker()
    if room <= 0 then break end
  end
  local head = redis.call('ZRANGE', k_ready(b), 0, 1)  -- the head, and whether more follow
  if #head == 0 then
    redis.call('ZREM', k_turns(rank), b)
  else
    local i = head[1]
    redis.call('ZREM', k_ready(b), i)
    local raw = redis.call('HGET', k_entry(b), i)
    redis.call('HDEL', k_entry(b), i)
    if #head == 1 then
      redis.call('ZREM', k_turns(rank), b)
    else
      redis.call('ZADD', k_turns(rank), redis.call('INCR', K_ROUND), b)
    end
    local status = redis.call('HGET', k_item(b, i), 'status')
    if raw and status and not TERMINAL[status] then
      redis.call('ZADD', k_live(b), string.format('%.6f', t / 1000), i)
      out[#out + 1] = b
      out[#out + 1] = i
      out[#out + 1] = raw
      out[#out + 1] = rank
      taken = taken + 1
    end
  end
end
if taken > 0 then redis.call('HINCRBY', K_STATS, 'fed', taken) end

-- Nothing left the due zset unless step 1 moved sends (this loop only reads and writes lines).
local next_due = #due > 0 and redis.call('ZRANGE', K_DUE, 0, 0, 'WITHSCORES') or first_due
local result = { #next_due > 0 and string.format('%.3f', math.max(tonumber(next_due[2]) - t, 0)) or '-1' }
for _, v in ipairs(out) do result[#result + 1] = v end
return result
