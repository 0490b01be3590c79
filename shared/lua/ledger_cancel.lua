-- Cancel a batch. KEYS = batch hash, live zset, item hash x N.
-- Flags the batch; pending and held items become canceled now, running ones are canceled by their
-- workers. Returns {items canceled now, batch finished now, items left to their workers to stop,
-- then the task ids sent for the items canceled now} (their queued messages can be revoked: the
-- items are final, so no message of theirs is needed any more). A finished batch is left as it is
-- (nothing to cancel; it is not flagged): {-2, 0, 0}.
local batch = KEYS[1]
if redis.call("EXISTS", batch) == 0 then
  return { -1, 0, 0 }
end
if redis.call("HEXISTS", batch, "finished_at") == 1 then
  return { -2, 0, 0 }
end
local t = now()
redis.call("HSET", batch, "canceled", "1")
redis.call("HSETNX", batch, "canceled_at", string.format("%.6f", t))
local n = 0
local stopping = 0
local sent = {}
for i = 3, #KEYS do
  local item = KEYS[i]
  local status = redis.call("HGET", item, "status")
  if status and status ~= "pending" and status ~= "held" and not TERMINAL[status] then
    stopping = stopping + 1
  end
  if status == "pending" or status == "held" then
    move(batch, item, status, "canceled")
    redis.call("ZREM", KEYS[2], index_of(item))
    redis.call("HSET", item, "error", "batch canceled", "finished_at", string.format("%.6f", t))
    n = n + 1
    local ids = redis.call("HGET", item, "sent_tasks")
    if ids then
      for id in string.gmatch(ids, "%S+") do
        table.insert(sent, id)
      end
    end
  end
end
local out = { n, check_finished(batch, t), stopping }
for _, id in ipairs(sent) do
  table.insert(out, id)
end
return out
