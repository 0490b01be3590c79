-- The batch ledger's state changes, one script so every change is atomic with its counters.
--
-- Layout (see ledger.py): the batch hash holds the batch fields and one counter per status
-- ("n:<status>"); each item hash holds "status", "attempt" (the current attempt number),
-- "current_model", the request JSON, the outcome fields, and one "att:<n>" JSON record per attempt.
-- Time always comes from Redis (TIME) so every host writes comparable timestamps.
--
-- The "live" zset (KEYS named per function) holds every non-terminal item's index with its last
-- sign of life (Unix time from TIME): created, enqueued (plus the message's countdown), or a state
-- change. Terminal items leave it. The workers' recovery sweep re-sends items stale in it.
--
-- ARGV[1] is the operation; the rest depends on it (documented per function).

local TERMINAL = { succeeded = true, failed = true, canceled = true, substituted = true }
local STATUSES = { "pending", "running", "succeeded", "failed", "canceled", "substituted" }

local function now()
  local t = redis.call("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function terminal_count(batch)
  local n = 0
  for status, _ in pairs(TERMINAL) do
    n = n + tonumber(redis.call("HGET", batch, "n:" .. status) or "0")
  end
  return n
end

-- Sets finished_at when every item is terminal; returns 1 the first time that happens.
local function check_finished(batch, t)
  local total = tonumber(redis.call("HGET", batch, "total") or "0")
  if terminal_count(batch) >= total and redis.call("HEXISTS", batch, "finished_at") == 0 then
    redis.call("HSET", batch, "finished_at", string.format("%.6f", t))
    return 1
  end
  return 0
end

local function move(batch, item, from, to)
  if from ~= to then
    redis.call("HINCRBY", batch, "n:" .. from, -1)
    redis.call("HINCRBY", batch, "n:" .. to, 1)
    redis.call("HSET", item, "status", to)
  end
end

-- Merge `update` (a decoded JSON object) into the attempt record att:<n>. started_at is kept once
-- set; when the update carries a final status, `seconds` is filled from started_at.
local function merge_attempt(item, n, update, t)
  local field = "att:" .. n
  local raw = redis.call("HGET", item, field)
  local record = raw and cjson.decode(raw) or { attempt = tonumber(n) }
  for k, v in pairs(update) do
    if not (k == "started_at" and record.started_at ~= nil and record.started_at ~= cjson.null) then
      record[k] = v
    end
  end
  if record.started_at == nil or record.started_at == cjson.null then
    record.started_at = t
  end
  if update.final then
    record.seconds = math.floor((t - tonumber(record.started_at)) * 1000 + 0.5) / 1000
    record.final = nil
  end
  redis.call("HSET", item, field, cjson.encode(record))
end

-- Newer sign of life only (GT): an enqueue with a countdown records when its message is due.
local function alive(live, index, t)
  redis.call("ZADD", live, "GT", string.format("%.6f", t), index)
end

-- The item's index from its key (".../item:<i>").
local function index_of(item)
  return string.match(item, ":item:(%d+)$")
end

-- create: KEYS = batches zset, batch hash, live zset, fingerprint key (the batch hash again when
-- there is no fingerprint), item hash x N
-- ARGV[2] batch id, ARGV[3] output_root, ARGV[4] options JSON, ARGV[5] content fingerprint ("" =
-- none), ARGV[6] "unique" (refuse when another live batch has this fingerprint) or "" (record it),
-- ARGV[7] the batch keys' prefix ("<prefix>:batch:"), ARGV[8..] one JSON per item:
--   {"request": <ImageRequest JSON string>, "model": first model}
-- Returns {1, the batch that had this fingerprint before or ""} when created, {0, ""} when the
-- batch id exists already (nothing changed), {2, that batch's id} when refused as a duplicate.
-- The fingerprint key is only trusted while the batch it names exists (a pruned or deleted batch
-- leaves no duplicate behind).
local function create()
  local batch = KEYS[2]
  if redis.call("EXISTS", batch) == 1 then
    return { 0, "" }
  end
  local fingerprint = ARGV[5]
  local previous = ""
  if fingerprint ~= "" then
    local holder = redis.call("GET", KEYS[4])
    if holder and redis.call("EXISTS", ARGV[7] .. holder) == 1 then
      previous = holder
      if ARGV[6] == "unique" then
        return { 2, holder }
      end
    end
  end
  local t = now()
  local total = #ARGV - 7
  local live = KEYS[3]
  redis.call("DEL", live)
  redis.call("HSET", batch, "id", ARGV[2], "created_at", string.format("%.6f", t), "total", total,
    "output_root", ARGV[3], "options", ARGV[4], "canceled", "0")
  if fingerprint ~= "" then
    redis.call("HSET", batch, "fingerprint", fingerprint)
    redis.call("SET", KEYS[4], ARGV[2])
  end
  for _, status in ipairs(STATUSES) do
    redis.call("HSET", batch, "n:" .. status, 0)
  end
  redis.call("HSET", batch, "n:pending", total)
  for i = 1, total do
    local spec = cjson.decode(ARGV[7 + i])
    redis.call("DEL", KEYS[4 + i])
    redis.call("HSET", KEYS[4 + i], "status", "pending", "attempt", 1, "base_attempt", 1,
      "current_model", spec.model, "request", spec.request)
    redis.call("ZADD", live, string.format("%.6f", t), i - 1)
  end
  if total == 0 then
    redis.call("HSET", batch, "finished_at", string.format("%.6f", t))
  end
  redis.call("ZADD", KEYS[1], t, ARGV[2])
  return { 1, previous }
end

-- transition: KEYS = batch hash, item hash, live zset
-- ARGV[2] new status, ARGV[3] allowed current statuses (comma list, "" = any non-terminal),
-- ARGV[4] expected current attempt ("" = any), ARGV[5] item fields JSON (string values; JSON null
-- deletes the field), ARGV[6] attempt number ("" = none), ARGV[7] attempt update JSON.
-- Returns {changed 0|1, status before, batch finished now 0|1, current attempt}.
local function transition()
  local batch, item = KEYS[1], KEYS[2]
  local cur = redis.call("HGET", item, "status")
  if not cur then
    return { 0, "missing", 0, 0 }
  end
  local attempt = redis.call("HGET", item, "attempt") or "0"
  if TERMINAL[cur] then
    return { 0, cur, 0, tonumber(attempt) }
  end
  if ARGV[3] ~= "" then
    local ok = false
    for allowed in string.gmatch(ARGV[3], "[^,]+") do
      if allowed == cur then ok = true end
    end
    if not ok then
      return { 0, cur, 0, tonumber(attempt) }
    end
  end
  if ARGV[4] ~= "" and ARGV[4] ~= attempt then
    return { 0, cur, 0, tonumber(attempt) }
  end
  local t = now()
  local new = ARGV[2]
  move(batch, item, cur, new)
  if new == "running" then
    redis.call("HSETNX", batch, "started_at", string.format("%.6f", t))
  end
  local fields = cjson.decode(ARGV[5])
  for k, v in pairs(fields) do
    if v == cjson.null then
      redis.call("HDEL", item, k)
    else
      redis.call("HSET", item, k, tostring(v))
    end
  end
  if ARGV[6] ~= "" then
    merge_attempt(item, ARGV[6], cjson.decode(ARGV[7]), t)
  end
  local finished = 0
  if TERMINAL[new] then
    redis.call("HSET", item, "finished_at", string.format("%.6f", t))
    redis.call("ZREM", KEYS[3], index_of(item))
    finished = check_finished(batch, t)
  else
    alive(KEYS[3], index_of(item), t)
  end
  return { 1, cur, finished, tonumber(redis.call("HGET", item, "attempt") or "0") }
end

-- cancel: KEYS = batch hash, live zset, item hash x N. Flags the batch; pending items become canceled now,
-- running ones are canceled by their workers. Returns {items canceled now, batch finished now, then
-- the task ids sent for the items canceled now} (their queued messages can be revoked: the items
-- are final, so no message of theirs is needed any more).
local function cancel()
  local batch = KEYS[1]
  if redis.call("EXISTS", batch) == 0 then
    return { -1, 0 }
  end
  local t = now()
  redis.call("HSET", batch, "canceled", "1")
  redis.call("HSETNX", batch, "canceled_at", string.format("%.6f", t))
  local n = 0
  local sent = {}
  for i = 3, #KEYS do
    local item = KEYS[i]
    if redis.call("HGET", item, "status") == "pending" then
      move(batch, item, "pending", "canceled")
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
  local out = { n, check_finished(batch, t) }
  for _, id in ipairs(sent) do
    table.insert(out, id)
  end
  return out
end

-- reset: KEYS = batch hash, live zset, item hash x N. Failed items (and canceled ones when ARGV[2] is
-- "1") go back to pending with a fresh attempt number and the first model of their route
-- (ARGV[3..] = that model per item, same order as KEYS[3..]).
-- A canceled batch gets its cancel lifted when anything is reset (workers would cancel the items
-- again at once otherwise), but only once none of its items is still running: those are being
-- canceled, and lifting the flag under them would let them run on.
-- Returns {1, the positions (1-based in KEYS[3..]) that were reset...} or {-1, open items} when
-- refused for that reason.
local function reset()
  local batch = KEYS[1]
  local with_canceled = ARGV[2] == "1"
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
        "current_model", ARGV[i])
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
end

-- enqueued: KEYS = live zset, item hash x N; ARGV[2] the messages' countdown in seconds; ARGV[3..]
-- (optional) the task id of each message, same order as KEYS[2..].
-- Records that a message for each (non-terminal) item was just sent: "enqueued_at" on the item
-- (send time), its task id in "sent_tasks" (the last MAX_SENT_TASKS, space-separated, for
-- `producer cancel` to revoke) and, in the live zset, when that message is due. Returns how many
-- were recorded.
local MAX_SENT_TASKS = 5
local function enqueued()
  local t = now()
  local due = t + tonumber(ARGV[2] or "0")
  local n = 0
  for i = 2, #KEYS do
    local item = KEYS[i]
    local status = redis.call("HGET", item, "status")
    if status and not TERMINAL[status] then
      redis.call("HSET", item, "enqueued_at", string.format("%.6f", t))
      local id = ARGV[i + 1]
      if id and id ~= "" then
        local ids = {}
        for old in string.gmatch(redis.call("HGET", item, "sent_tasks") or "", "%S+") do
          table.insert(ids, old)
        end
        table.insert(ids, id)
        while #ids > MAX_SENT_TASKS do
          table.remove(ids, 1)
        end
        redis.call("HSET", item, "sent_tasks", table.concat(ids, " "))
      end
      alive(KEYS[1], index_of(item), due)
      n = n + 1
    end
  end
  return n
end

local op = ARGV[1]
if op == "create" then return create() end
if op == "transition" then return transition() end
if op == "cancel" then return cancel() end
if op == "reset" then return reset() end
if op == "enqueued" then return enqueued() end
return redis.error_reply("unknown ledger op " .. tostring(op))
