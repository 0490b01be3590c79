-- Release a holder, or withdraw a waiter (ARGV[3]); idempotent. Wakes whoever is next
-- (drop_member(), common.lua). Returns {removed_holder (0/1), removed_waiter (0/1), now_ms}.
local L = limits(false)
sync_epoch(L)
local held, waited = drop_member(ARGV[3], L)
return reply({held, waited, fmt(NOW)})
