-- The last check before a creation POST, in one round trip (nothing else stands between the
-- creation token and the POST): the claim is still this run's, no prediction is recorded
-- for the attempt yet, the batch is not canceled; then `posting_at` (Redis time) is stamped on the
-- creation record, from when a POST may be in flight.
-- KEYS[1] the attempt's claim, KEYS[2] the batch hash, KEYS[3] the creation record (hash).
-- ARGV[1] the claim token, ARGV[2] the creation record's ttl (seconds).
-- Returns {code, posting_at}: 1 go (stamped), 0 the claim is not ours, 2 a prediction is already
-- recorded for the attempt, 3 the batch is canceled (codes 0/2/3 stamp nothing).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, ''}
end
if redis.call('HGET', KEYS[3], 'prediction_id') then
  return {2, ''}
end
if redis.call('HGET', KEYS[2], 'canceled') == '1' then
  return {3, ''}
end
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1e6)
redis.call('HSET', KEYS[3], 'posting_at', now)
redis.call('EXPIRE', KEYS[3], ARGV[2])
return {1, now}
