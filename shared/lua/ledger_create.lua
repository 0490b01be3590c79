-- Record a batch and its items, all or nothing.
-- KEYS = batches zset, batch hash, live zset, fingerprint key (the batch hash again when
-- there is no fingerprint), item hash x N
-- ARGV[1] batch id, ARGV[2] output_root, ARGV[3] options JSON, ARGV[4] content fingerprint ("" =
-- none), ARGV[5] "unique" (refuse when another live batch has this fingerprint) or "" (record it),
-- ARGV[6] the batch keys' prefix ("<prefix>:batch:"), ARGV[7..] one JSON per item:
--   {"request": <ImageRequest JSON string>, "model": first model}
-- Returns {1, the batch that had this fingerprint before or ""} when created, {0, ""} when the
-- batch id exists already (nothing changed), {2, that batch's id} when refused as a duplicate.
-- The fingerprint key is only trusted while the batch it names exists (a pruned or deleted batch
-- leaves no duplicate behind).
local batch = KEYS[2]
if redis.call("EXISTS", batch) == 1 then
  return { 0, "" }
end
local fingerprint = ARGV[4]
local previous = ""
if fingerprint ~= "" then
  local holder = redis.call("GET", KEYS[4])
  if holder and redis.call("EXISTS", ARGV[6] .. holder) == 1 then
    previous = holder
    if ARGV[5] == "unique" then
      return { 2, holder }
    end
  end
end
local t = now()
local total = #ARGV - 6
local live = KEYS[3]
redis.call("DEL", live)
redis.call("HSET", batch, "id", ARGV[1], "created_at", string.format("%.6f", t), "total", total,
  "output_root", ARGV[2], "options", ARGV[3], "canceled", "0")
if fingerprint ~= "" then
  redis.call("HSET", batch, "fingerprint", fingerprint)
  redis.call("SET", KEYS[4], ARGV[1])
end
for _, status in ipairs(STATUSES) do
  redis.call("HSET", batch, "n:" .. status, 0)
end
redis.call("HSET", batch, "n:pending", total)
for i = 1, total do
  local spec = cjson.decode(ARGV[6 + i])
  redis.call("DEL", KEYS[4 + i])
  redis.call("HSET", KEYS[4 + i], "status", "pending", "attempt", 1, "base_attempt", 1,
    "current_model", spec.model, "request", spec.request)
  redis.call("ZADD", live, string.format("%.6f", t), i - 1)
end
if total == 0 then
  redis.call("HSET", batch, "finished_at", string.format("%.6f", t))
end
redis.call("ZADD", KEYS[1], t, ARGV[1])
return { 1, previous }
