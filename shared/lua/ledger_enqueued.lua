-- Messages were sent for items. KEYS = live zset, item hash x N; ARGV[1] the messages'
-- countdown in seconds; ARGV[2..] (optional) the task id of each message, same order as KEYS[2..].
-- Records that a message for each (non-terminal) item was just sent: "enqueued_at" on the item
-- (send time), its task id in "sent_tasks" (the last MAX_SENT_TASKS, space-separated, for
-- `producer cancel` to revoke) and, in the live zset, when that message is due. Returns how many
-- were recorded.
local MAX_SENT_TASKS = 5
local t = now()
local due = t + tonumber(ARGV[1] or "0")
local n = 0
for i = 2, #KEYS do
  local item = KEYS[i]
  local v = redis.call("HMGET", item, "status", "sent_tasks")
  local status = v[1]
  if status and not TERMINAL[status] then
    local sets = { "enqueued_at", string.format("%.6f", t) }
    local id = ARGV[i]
    if id and id ~= "" then
      local ids = {}
      for old in string.gmatch(v[2] or "", "%S+") do
        table.insert(ids, old)
      end
      table.insert(ids, id)
      while #ids > MAX_SENT_TASKS do
        table.remove(ids, 1)
      end
      sets[3], sets[4] = "sent_tasks", table.concat(ids, " ")
    end
    redis.call("HSET", item, unpack(sets))
    alive(KEYS[1], index_of(item), due)
    n = n + 1
  end
end
return n
