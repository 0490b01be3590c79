-- Reserve without a creation token (tests and tools; the workers reserve in token.lua):
-- ARGV[1] the reservation JSON (see reservation_of). Returns {1, reserved now 0|1} or
-- {0, scope, limit}.
local r = reservation_of(ARGV[1])
if r == nil then budget_fail('reserve needs a reservation') end
local day = budget_day(budget_now_s())
local refused = budget_refusal(r, day)
if refused then return {0, refused[1], string.format('%d', refused[2])} end
return {1, budget_reserve(r, day)}
