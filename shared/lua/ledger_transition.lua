-- Move an item to a new status, with its fields and attempt record; terminal states are final.
-- KEYS = batch hash, item hash, live zset
-- ARGV[1] new status, ARGV[2] allowed current statuses (comma list, "" = any non-terminal),
-- ARGV[3] expected current attempt ("" = any), ARGV[4] item fields JSON (string values; JSON null
-- deletes the field), ARGV[5] attempt number ("" = none), ARGV[6] attempt update JSON.
-- Returns {changed 0|1, status before, batch finished now 0|1, current attempt}.
local batch, item = KEYS[1], KEYS[2]
local cur = redis.call("HGET", item, "status")
if not cur then
  return { 0, "missing", 0, 0 }
end
local attempt = redis.call("HGET", item, "attempt") or "0"
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
local t = now()
local new = ARGV[1]
move(batch, item, cur, new)
if new == "running" then
  redis.call("HSETNX", batch, "started_at", string.format("%.6f", t))
end
local fields = cjson.decode(ARGV[4])
for k, v in pairs(fields) do
  if v == cjson.null then
    redis.call("HDEL", item, k)
  else
    redis.call("HSET", item, k, tostring(v))
  end
end
if ARGV[5] ~= "" then
  merge_attempt(item, ARGV[5], cjson.decode(ARGV[6]), t)
end
local finished = 0
if TERMINAL[new] then
  redis.call("HSET", item, "finished_at", string.format("%.6f", t))
  redis.call("ZREM", KEYS[3], index_of(item))
  finished = check_finished(batch, t)
elseif new == "held" then
  alive(KEYS[3], index_of(item), PARKED)
else
  alive(KEYS[3], index_of(item), t)
end
return { 1, cur, finished, tonumber(redis.call("HGET", item, "attempt") or "0") }
