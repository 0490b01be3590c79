-- Hold sends for items of one batch until the feeder moves them into the broker.
-- ARGV[2] batch id, ARGV[3] delay in ms (0: ready now), then pairs: index, entry JSON
-- ({a, m, r, p}: attempt, model, recheck, prompt's start).
-- An item has at most one pending send: a newer one replaces it, one for an older attempt than
-- the held one is ignored, and terminal (or missing) items are skipped. The item is marked
-- `enqueued_at` (the ledger's "a send was decided") and PARKED in the batch's live zset.
-- Returns how many sends are held now.
local b, delay = ARGV[2], tonumber(ARGV[3])
if not delay or delay < 0 then error({err = 'ERR scheduler: bad delay ' .. tostring(ARGV[3])}) end
local entries = {}
for n = 4, #ARGV - 1, 2 do
  local ok, entry = pcall(cjson.decode, ARGV[n + 1])
  if not ok or type(entry) ~= 'table' or type(entry.a) ~= 'number' or type(entry.m) ~= 'string' then
    error({err = 'ERR scheduler: bad entry for item ' .. tostring(ARGV[n])})
  end
  entries[#entries + 1] = { ARGV[n], entry, ARGV[n + 1] }
end
local rank = rank_of(b)
if rank == nil then return 0 end
local t = now_ms()
local held = 0
for _, e in ipairs(entries) do
  local i, entry, raw = e[1], e[2], e[3]
  local status = redis.call('HGET', k_item(b, i), 'status')
  if status and not TERMINAL[status] then
    local old = redis.call('HGET', k_entry(b), i)
    local older = old and tonumber(cjson.decode(old).a) > entry.a
    if not older then
      redis.call('HSET', k_entry(b), i, raw)
      if delay > 0 then
        redis.call('ZREM', k_ready(b), i)
        redis.call('ZADD', K_DUE, string.format('%.3f', t + delay), b .. ':' .. i)
      else
        redis.call('ZREM', K_DUE, b .. ':' .. i)
        make_ready(b, i, rank)
      end
      redis.call('HSET', k_item(b, i), 'enqueued_at', string.format('%.6f', t / 1000))
      redis.call('ZADD', k_live(b), PARKED, i)
    end
    held = held + 1
  end
end
if held > 0 then wake_feeder() end
return held
