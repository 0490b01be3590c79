-- Prelude of every ledger script (ledger_*.lua): lua_scripts.py sends it in front of each one.
-- Each script is one state change, atomic with the batch's counters.
--
-- Layout (see shared/ledger/ledger.py): the batch hash holds the batch fields and one counter per status
-- ("n:<status>"); each item hash holds "status", "attempt" (the current attempt number),
-- "current_model", the request JSON, the outcome fields, and one "att:<n>" JSON record per attempt.
-- Time always comes from Redis (TIME) so every host writes comparable timestamps.
--
-- The "live" zset (KEYS named per script) holds every non-terminal item's index with its last
-- sign of life (Unix time from TIME): created, enqueued (plus the message's countdown), or a state
-- change. Terminal items leave it. The workers' recovery sweep re-sends items stale in it.

local TERMINAL = { succeeded = true, failed = true, canceled = true, substituted = true }
local STATUSES = { "pending", "running", "held", "succeeded", "failed", "canceled", "substituted" }
-- shared.scheduler.PARKED: the sign of life of an item that waits without a message (a send the
-- schedule holds, or a `held` item): later than any time, so the sweep never sends it again.
local PARKED = 100000000000

local function now()
  local t = redis.call("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- Sets finished_at when every item is terminal; returns 1 the first time that happens. One read
-- of the batch hash (total, the terminal counters, finished_at).
local function check_finished(batch, t)
  local fields = { "total", "finished_at" }
  for status, _ in pairs(TERMINAL) do
    fields[#fields + 1] = "n:" .. status
  end
  local v = redis.call("HMGET", batch, unpack(fields))
  local done = 0
  for i = 3, #fields do
    done = done + tonumber(v[i] or "0")
  end
  if done >= tonumber(v[1] or "0") and not v[2] then
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

-- The attempt record att:<n> (its stored JSON `raw`, or false/nil when absent) with `update` (a
-- decoded JSON object) merged in, encoded. started_at is kept once set; when the update carries a
-- final status, `seconds` is filled from started_at.
local function merged_attempt(raw, n, update, t)
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
  return cjson.encode(record)
end

-- Newer sign of life only (GT): an enqueue with a countdown records when its message is due.
local function alive(live, index, t)
  redis.call("ZADD", live, "GT", string.format("%.6f", t), index)
end

-- The item's index from its key (".../item:<i>").
local function index_of(item)
  return string.match(item, ":item:(%d+)$")
end

