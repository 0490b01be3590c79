-- Move an item to a new status, with its fields and attempt record; terminal states are final.
-- KEYS = batch hash, item hash, live zset
-- ARGV[1] new status, ARGV[2] allowed current statuses (comma list, "" = any non-terminal),
-- ARGV[3] expected current attempt ("" = any), ARGV[4] item fields JSON (string values; JSON null
-- deletes the field), ARGV[5] attempt number ("" = none), ARGV[6] attempt update JSON.
-- Optional: KEYS[4] the attempt's claim and ARGV[7] its token: the claim is released (deleted if
-- still this token's, as claim_release.lua does) in the same round trip, whatever the answer: a
-- run's end and its claim's release were two round trips.
-- Returns {changed 0|1, status before, batch finished now 0|1, current attempt}.
-- One read of the item (status, attempt, the attempt's record) and one write of its fields.
local batch, item = KEYS[1], KEYS[2]
if KEYS[4] and redis.call("GET", KEYS[4]) == ARGV[7] then
  redis.call("DEL", KEYS[4])
end
local att_field = ARGV[5] ~= "" and ("att:" .. ARGV[5]) or nil
local v = redis.call("HMGET", item, "status", "attempt", att_field or "status")
local cur, attempt = v[1], v[2] or "0"
if not cur then
  return { 0, "missing", 0, 0 }
end
if TERMINAL[cur] then
  return { 0, cur, 0, tonumber(attempt) }
end
if ARGV[2] ~= "" then
  local ok = false
  for allowed in string.gmatch(ARGV[2], "[^,]+") do
    if allowed == cur then ok = true end
  end
  if not ok then
    return { 0, cur, 0, tonumber(attempt) }
  end
end
if ARGV[3] ~= "" and ARGV[3] ~= attempt then
  return { 0, cur, 0, tonumber(attempt) }
end
local fields = cjson.decode(ARGV[4])
local update = att_field and cjson.decode(ARGV[6])
local t = now()
local new = ARGV[1]
-- Written in this order, as separate HSETs would: the status, the fields, the attempt's record,
-- finished_at (a later pair of one HSET wins over an earlier one for the same field).
local sets, dels = {}, {}
if cur ~= new then
  redis.call("HINCRBY", batch, "n:" .. cur, -1)
  redis.call("HINCRBY", batch, "n:" .. new, 1)
  sets[#sets + 1], sets[#sets + 2] = "status", new
  if new == "running" then
    -- Once any item has been running the field exists, so only an item entering it can set it.
    redis.call("HSETNX", batch, "started_at", string.format("%.6f", t))
  end
end
for k, val in pairs(fields) do
  if val == cjson.null then
    dels[#dels + 1] = k
  else
    sets[#sets + 1], sets[#sets + 2] = k, tostring(val)
    if k == "attempt" then attempt = tostring(val) end
  end
end
if att_field then
  sets[#sets + 1], sets[#sets + 2] = att_field, merged_attempt(v[3], ARGV[5], update, t)
end
local finished = 0
if TERMINAL[new] then
  sets[#sets + 1], sets[#sets + 2] = "finished_at", string.format("%.6f", t)
end
if #dels > 0 then
  redis.call("HDEL", item, unpack(dels))
  if fields.attempt == cjson.null then attempt = "0" end
end
if #sets > 0 then
  redis.call("HSET", item, unpack(sets))
end
if TERMINAL[new] then
  redis.call("ZREM", KEYS[3], index_of(item))
  finished = check_finished(batch, t)
elseif new == "held" then
  alive(KEYS[3], index_of(item), PARKED)
else
  alive(KEYS[3], index_of(item), t)
end
return { 1, cur, finished, tonumber(attempt) }
