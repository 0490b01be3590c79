-- Settle the reservation of attempt ARGV[1] (budget_settle(), budget_common.lua): it cost ARGV[2]
-- micro-USD ('' = what was reserved; '0' = nothing was created: the reservation is released).
-- Returns {1, amount reserved, cost} or {0} when the attempt holds no reservation (settled
-- already, or none was made).
return budget_settle(ARGV[1], settle_request(ARGV[1], ARGV[2]))
