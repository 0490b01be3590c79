-- What the scheduler holds, in one consistent read: per priority rank {batches, ready sends},
-- then the delayed sends, the next due (ms, -1: none), then the length of each broker list
-- ARGV[2..], then the stats (moved, max_late_ms, fed).
local t = now_ms()
local out = {}
for k = 0, RANKS - 1 do
  local batches = redis.call('ZRANGE', k_turns(k), 0, -1)
  local ready = 0
  for _, b in ipairs(batches) do ready = ready + redis.call('ZCARD', k_ready(b)) end
  out[#out + 1] = #batches
  out[#out + 1] = ready
end
out[#out + 1] = redis.call('ZCARD', K_DUE)
local next_due = redis.call('ZRANGE', K_DUE, 0, 0, 'WITHSCORES')
out[#out + 1] = #next_due > 0 and string.format('%.3f', math.max(tonumber(next_due[2]) - t, 0)) or '-1'
for n = 2, #ARGV do out[#out + 1] = redis.call('LLEN', ARGV[n]) end
local s = redis.call('HMGET', K_STATS, 'moved', 'max_late_ms', 'fed')
out[#out + 1] = s[1] or '0'
out[#out + 1] = s[2] or '0'
out[#out + 1] = s[3] or '0'
return out
