-- Reserve one creation ('create') or read ('read') token (token_common.lua, sent in front of this
-- script after common.lua and budget_common.lua, says how; its ARGV[3..10] are this script's).
-- Returns {1, wait_ms, at_ms} or {0, wait_ms, reason} (reason 'paused', 'busy' or 'lost': the
-- holder does not hold its lease; nothing reserved, nothing marked) or {0, 0, 'budget', scope,
-- limit micro-USD}.
local T = token_args()
local G, refusal = token_decide(T)
if not G then return reply(refusal) end
return reply(token_grant(T, G))
