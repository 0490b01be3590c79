-- Pause creations for ARGV[3] ms (Redis time), keeping a longer pause already set.
-- ARGV[4] reason. Returns {until_ms, now_ms}.
local ms, reason = tonumber(ARGV[3]), ARGV[4]
if not ms or ms <= 0 or ms > MAX_WINDOW_MS then fail('pause must be 0 < ms <= one day') end
local L = limits(false)
sync_epoch(L)
local untl = set_pause(NOW + ms, reason)
return reply({fmt(untl), fmt(NOW)})
