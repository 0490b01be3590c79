-- The end of a prediction, in ONE round trip: the slot released (drop_member(), as drop.lua) and
-- the attempt's reservation settled (budget_settle(), as the budget's settle.lua). Sent after
-- common.lua and the budget's budget_common.lua (whose keys are the last three).
-- ARGV[3] the holder id, ARGV[4] the attempt's marker, ARGV[5] what it cost (micro-USD; '' = what
-- was reserved: a created prediction counts as paid, whatever its end).
-- Both inputs are checked before any write; the caller runs the two apart should this call fail
-- (each is idempotent), so a failed settle never keeps the slot, nor the reverse.
-- Returns reply({removed_holder (0/1), removed_waiter (0/1), now_ms, settle.lua's reply}).
local id, marker = ARGV[3], ARGV[4]
local cost = settle_request(marker, ARGV[5])
local L = limits(false)
sync_epoch(L)
local held, waited = drop_member(id, L)
return reply({held, waited, fmt(NOW), budget_settle(marker, cost)})
