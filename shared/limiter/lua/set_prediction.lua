-- Record the prediction id in a holder's info and index (show_prediction(), common.lua).
-- ARGV[3] holder id, ARGV[4] prediction id. Returns 1 if recorded, 0 if the holder is not counted.
local L = limits(false)
sync_epoch(L)
return reply(show_prediction(ARGV[3], ARGV[4]))
