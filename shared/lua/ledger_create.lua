-- Record a batch whose items ledger_stage.lua staged (in chunks), in one short call: the batch
-- exists, runnable and listed, from this call on, with all its items or not at all.
-- KEYS = batches zset, batch hash, live zset, fingerprint key (the batch hash again when
-- there is no fingerprint), staging key, the set of batches whose staged items still expire
-- ARGV[1] batch id, ARGV[2] output_root, ARGV[3] options JSON, ARGV[4] content fingerprint ("" =
-- none), ARGV[5] "unique" (refuse when another live batch has this fingerprint) or "" (record it),
-- ARGV[6] the batch keys' prefix ("<prefix>:batch:"), ARGV[7] the staging token, ARGV[8] the
-- number of items (all staged under that token).
-- Returns {1, the batch that had this fingerprint before or ""} when created, {0, ""} when the
-- batch id exists already (nothing changed), {2, that batch's id} when refused as a duplicate,
-- {3, ""} when the staging is not this caller's any more (it expired, or another took over).
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
local total = tonumber(ARGV[8])
if total > 0 and redis.call("GET", KEYS[5]) ~= ARGV[7] then
  return { 3, "" }
end
local t = now()
local live = KEYS[3]
if total == 0 then
  redis.call("DEL", live)
else
  -- The staged items expire until Ledger persists them (chunked); the sweep finishes that if the
  -- producer dies first (persist_staged).
  redis.call("PERSIST", live)
  redis.call("SADD", KEYS[6], ARGV[1])
end
redis.call("DEL", KEYS[5])
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
if total == 0 then
  redis.call("HSET", batch, "finished_at", string.format("%.6f", t))
end
redis.call("ZADD", KEYS[1], t, ARGV[1])
return { 1, previous }
