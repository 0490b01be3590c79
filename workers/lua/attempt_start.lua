-- The start of a run of an attempt, in one round trip: the checks that were five (the item's
-- state, the claim, the batch's cancel flag, the running transition, the request read) and the
-- creation record's read, atomically. Sent after ledger_common.lua (shared/lua).
-- KEYS[1] the item hash, KEYS[2] the batch hash, KEYS[3] the batch's live zset, KEYS[4] the
-- attempt's claim, KEYS[5] its "seen" marker (claim_take.lua), KEYS[6] the creation record.
-- ARGV[1] the attempt number, ARGV[2] the claim token, ARGV[3] the claim's ttl (ms), ARGV[4] the
-- marker's ttl (seconds), ARGV[5] the task id, ARGV[6] "1": a `held` item may start (the caller
-- took it out of the budget's held set first).
-- Returns {verdict, status, current attempt, current model, ...}, the verdict one of:
--   missing | terminal | other (not the item's current attempt) | held (ARGV[6] not "1") —
--     nothing written;
--   claimed (another live run holds the claim; + the request) — nothing written;
--   canceled (the batch is canceled; + the request) — the claim is taken, nothing else;
--   run (+ the request, the creation record as HGETALL's flat list) — the claim is taken and the
--     item moved to running as ledger_transition.lua does it (allowed from pending, running,
--     held; task_id set, held_reason dropped; the attempt's record: model, status running, no
--     error; a sign of life).
local item, batch = KEYS[1], KEYS[2]
local n = ARGV[1]
local att_field = "att:" .. n
local v = redis.call("HMGET", item, "status", "attempt", "current_model", "request", att_field)
local cur, attempt, model, request = v[1], v[2] or "0", v[3] or "", v[4] or ""
if not cur then
  return { "missing", "", "0", "" }
end
if TERMINAL[cur] then
  return { "terminal", cur, attempt, model }
end
if attempt ~= n then
  return { "other", cur, attempt, model }
end
if cur == "held" and ARGV[6] ~= "1" then
  return { "held", cur, attempt, model }
end
if not redis.call("SET", KEYS[4], ARGV[2], "NX", "PX", ARGV[3]) then
  return { "claimed", cur, attempt, model, request }
end
redis.call("SET", KEYS[5], ARGV[2], "EX", ARGV[4])
if redis.call("HGET", batch, "canceled") == "1" then
  return { "canceled", cur, attempt, model, request }
end
local t = now()
local sets = { "task_id", ARGV[5] }
if cur ~= "running" then
  redis.call("HINCRBY", batch, "n:" .. cur, -1)
  redis.call("HINCRBY", batch, "n:running", 1)
  sets[#sets + 1], sets[#sets + 2] = "status", "running"
  redis.call("HSETNX", batch, "started_at", string.format("%.6f", t))
end
local update = { model = model, status = "running", error = cjson.null }
sets[#sets + 1], sets[#sets + 2] = att_field, merged_attempt(v[5], n, update, t)
redis.call("HDEL", item, "held_reason")
redis.call("HSET", item, unpack(sets))
alive(KEYS[3], index_of(item), t)
return { "run", cur, attempt, model, request, redis.call("HGETALL", KEYS[6]) }
