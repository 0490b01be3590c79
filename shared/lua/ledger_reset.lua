-- Retry a batch's failed items. KEYS = batch hash, live zset, item hash x N.
-- Failed items (and canceled ones when ARGV[1] is "1") go back to pending with a fresh attempt
-- number and the first model of their route (ARGV[2..] = that model per item, same order as
-- KEYS[3..]).
-- A canceled batch gets its cancel lifted when anything is reset (workers would cancel the items
-- again at once otherwise), but only once none of its items is still running: those are being
-- canceled, and lifting the flag under them would let them run on.
-- Returns {1, the positions (1-based in KEYS[3..]) that were reset...} or {-1, open items} when
-- refused for that reason.
local batch = KEYS[1]
local with_canceled = ARGV[1] == "1"
local t = now()
if redis.call("HGET", batch, "canceled") == "1" then
  local open = tonumber(redis.call("HGET", batch, "n:pending") or "0")
    + tonumber(redis.call("HGET", batch, "n:running") or "0")
  if open > 0 then
    return { -1, open }
  end
end
local done = { 1 }
for i = 3, #KEYS do
  local item = KEYS[i]
  local status = redis.call("HGET", item, "status")
  if status == "failed" or (with_canceled and status == "canceled") then
    local next_attempt = tonumber(redis.call("HGET", item, "attempt") or "0") + 1
    move(batch, item, status, "pending")
    redis.call("HSET", item, "attempt", next_attempt, "base_attempt", next_attempt,
      "current_model", ARGV[i - 1])
    redis.call("HDEL", item, "error", "model", "outputs", "finished_at", "enqueued_at", "sent_tasks")
    redis.call("ZADD", KEYS[2], string.format("%.6f", t), index_of(item))
    table.insert(done, i - 2)
  end
end
if #done > 1 then
  redis.call("HDEL", batch, "finished_at", "manifest_at")
  if redis.call("HGET", batch, "canceled") == "1" then
    redis.call("HSET", batch, "canceled", "0", "uncanceled_at", string.format("%.6f", t))
    redis.call("HDEL", batch, "canceled_at")
  end
end
return done
