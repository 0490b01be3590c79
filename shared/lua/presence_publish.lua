-- One worker process's entry in the fleet's workers hash (shared.presence), seen now on Redis's
-- clock: TIME and HSET in one request instead of two.
-- KEYS[1] the workers hash; ARGV[1] the entry's field ("host:pid"), ARGV[2] its JSON object
-- without "seen" (ends with "}").
local t = redis.call('TIME')
local seen = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local entry = string.sub(ARGV[2], 1, -2) .. ', "seen": ' .. seen .. '}'
return redis.call('HSET', KEYS[1], ARGV[1], entry)
