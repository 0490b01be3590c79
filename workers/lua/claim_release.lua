-- Delete a claim only if we still own it. KEYS[1] claim, ARGV[1] token.
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
