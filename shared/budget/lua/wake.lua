-- Which held items fit now: in the order they were held, each whose amount fits the room left
-- (daily budget of today, its batch's limit) after the ones picked before it. A picked item is
-- stamped `w` and not picked again for ARGV[2] seconds (its send is on its way; its amount is
-- counted as spoken for meanwhile; the run removes
-- the record when it starts). ARGV[1] the caller's daily default ('' = none).
-- Returns a flat list {batch, index, batch, index, ...}.
local default, again_s = ARGV[1] or '', tonumber(ARGV[2]) or 600
if default ~= '' then micro(default, 'daily default') end
local now = budget_now_s()
local day = budget_day(now)
local raw = redis.call('HGETALL', KB_HELD)
local entries = {}
for i = 1, #raw, 2 do
  local ok, rec = pcall(cjson.decode, raw[i + 1])
  if ok and type(rec) == 'table' then
    rec.key = raw[i]
    table.insert(entries, rec)
  end
end
-- Held in the same instant (one hold after another within Redis's clock tick): by key, so the
-- order is the same on every call (Lua's sort is not stable; CI once saw 4 before 3).
table.sort(entries, function(x, y)
  local tx, ty = x.t or 0, y.t or 0
  if tx ~= ty then return tx < ty end
  return x.key < y.key
end)
local day_room = daily_room(day, default)
local rooms = {}
local function room_of(batch)
  if rooms[batch] == nil then rooms[batch] = batch_room(batch) or false end
  return rooms[batch]
end
-- Items picked lately are on their way to reserve: their amounts are not room for others.
local function on_the_way(rec) return rec.w and now - rec.w < again_s end
for _, rec in ipairs(entries) do
  local batch = string.match(rec.key, '^(.+):%d+$')
  if batch and on_the_way(rec) then
    local amount = tonumber(rec.a) or 0
    if day_room ~= nil then day_room = day_room - amount end
    if room_of(batch) ~= false then rooms[batch] = rooms[batch] - amount end
  end
end
local out = {}
for _, rec in ipairs(entries) do
  local batch, index = string.match(rec.key, '^(.+):(%d+)$')
  if batch and not on_the_way(rec) then
    room_of(batch)
    local amount = tonumber(rec.a) or 0
    local fits_day = day_room == nil or amount <= day_room
    local fits_batch = rooms[batch] == false or amount <= rooms[batch]
    if fits_day and fits_batch then
      if day_room ~= nil then day_room = day_room - amount end
      if rooms[batch] ~= false then rooms[batch] = rooms[batch] - amount end
      rec.w = now
      local key = rec.key
      rec.key = nil
      redis.call('HSET', KB_HELD, key, cjson.encode(rec))
      table.insert(out, batch)
      table.insert(out, index)
    end
  end
end
return out
