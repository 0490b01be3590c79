-- A creation token given back (Limiter.give_back_create_token): its POST was never sent, or was
-- refused with a 429, so nothing was created for the attempt. ARGV[3] holder id, ARGV[4] the
-- token's member of the creation log, ARGV[5] the attempt marker the token put on the holder.
-- The token leaves the log (removing a grant only loosens later ones: always safe), and the
-- holder loses that marker unless a prediction is recorded on it (the slot is then no creation in
-- flight: not shown at Replicate, not kept as an orphan should its worker die before the next
-- token marks it again). Returns {token removed (0/1), marker removed (0/1)}.
local id, member, attempt = ARGV[3], ARGV[4], ARGV[5]
local L = limits(false)
sync_epoch(L)
local removed = redis.call('ZREM', K_CREATES, member)
local unmarked = 0
local rec = redis.call('ZSCORE', K_HOLDERS, id) and decode_info(id)
if rec and rec.attempt == attempt and type(rec.prediction_id) ~= 'string' then
  unindex(K_BYATTEMPT, rec.attempt, id)
  rec.attempt = nil
  rec.creating_at = nil
  save_holder(id, rec)
  unmarked = 1
end
return reply({removed, unmarked})
