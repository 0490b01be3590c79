-- Everything between a slot and its creation POST in ONE call, when the creation token can be
-- granted at once (no wait: the common case under the rate): the intent (attempt_intent.lua),
-- the creation token with the attempt's price reserved and the slot marked with the attempt
-- (token.lua), the last check and the `posting_at` stamp (attempt_post.lua). Either all of it is
-- written and the answer is GO, or none of it and the answer says why; when the token needs a
-- wait (busy) or creations are paused, the caller takes the three steps one by one
-- (workers/creator.py), which can sleep until a reserved grant time.
-- Sent after common.lua (the limiter's prelude), budget_common.lua, token_common.lua,
-- ledger_common.lua and attempt_common.lua, whose functions it calls: the same code as the
-- three scripts it stands for. Nothing of the creation is written before every check has
-- passed (the limiter's own upkeep aside, as in any limiter call: the epoch, seeded limits,
-- grants dropped from the log once out of every window).
--
-- KEYS (common.lua owns 1..16 by position, budget_common.lua the last three):
--   1..16  the limiter's keys, in common.lua's order (holders, info, ..., rates, recovery)
--   17     the attempt's claim (STRING: the run's token)
--   18     the batch hash (its `canceled` flag)
--   19     the attempt's creation record (HASH)
--   20     the item hash (its status, current attempt and att:<n> record)
--   21     the model's index of intents (ZSET unresolved:<model>)
--   22     the batch's live zset
--   23..25 the budget's keys (state, res, held)
-- The limiter's and the budget's keys carry the limiter's hash tag, the others do not: like
-- attempt_post.lua (which reads the limiter's holders and info beside the claim and the item),
-- this script needs all of the fleet's keys on one Redis (a single server, or Sentinel's one
-- primary), as the fleet always has; the hash tag only keeps the limiter's own scripts valid on
-- a cluster, and nothing here changes that.
-- ARGV: [1] the limiter's config, [2] the epoch the caller saw last (common.lua); [3..10] the
-- creation token's (token_common.lua: kind 'create', grant id, margin, max wait '0', holder,
-- attempt marker, reservation, fence); [11] the claim token, [12] the creation record's ttl
-- (seconds), [13] the attempt number, [14] the model, [15] the `Prefer: wait` seconds the POST
-- will ask ('0': none), [16] the input as JSON text ('': not recorded).
-- Returns reply({token, code, posting_at}): token as token.lua's reply ({1, wait_ms, at_ms}
-- granted; {0, wait_ms, 'paused' | 'busy' | 'lost'}; {0, 0, 'budget', scope, limit}), or
-- {0, 0, 'declined'} when the token could be granted but the last check refuses; code: 1 GO
-- (posting_at stamped), attempt_post.lua's refusal codes (0 claim lost, 2 recorded, 3 canceled,
-- 5 moved on) with 'declined', '' otherwise.
local T = token_args()
local claim_token, ttl, n, model, wait, input_json = ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16]
if T.kind ~= 'create' or T.holder == '' or T.max_wait ~= 0 then
  fail('attempt_create: a creation token for a held slot, granted at once (max wait 0)')
end
if not claim_token or not tonumber(ttl) or not n or n == '' or not model or model == '' or not tonumber(wait) or input_json == nil then
  fail('attempt_create: bad claim, ttl, attempt, model, wait or input')
end
local G, refusal = token_decide(T)
if not G then return reply({refusal, '', ''}) end
local refused = attempt_post_refusal(KEYS[17], KEYS[18], KEYS[19], KEYS[20], claim_token, n)
if refused then return reply({{0, 0, 'declined'}, refused, ''}) end

attempt_write_intent(TIME, KEYS[19], KEYS[21], KEYS[20], KEYS[22], model, ttl, wait, T.attempt, n, input_json)
local granted = token_grant(T, G)
return reply({granted, 1, attempt_stamp_posting(TIME, KEYS[19], ttl)})
