-- tokens.lua: a token bucket refilled at `rate` per second up to `burst`.
-- Flags: allow-oom (it rewrites two fields; by EVAL its first write, EXPIRE, was allowed too)
-- KEYS[1]  P:bucket:<name>  HASH tok (tokens), at (last refill, broker's clock)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] rate  ARGV[4] burst  ARGV[5] tokens wanted
-- Returns '0' after taking them, else the seconds until there will be enough (a string).
local k, rate, burst, want = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local v = redis.call('HMGET', k, 'tok', 'at')
local tokens = tonumber(v[1] or '') or burst
local at = tonumber(v[2] or '') or NOW
tokens = math.min(burst, tokens + math.max(0, NOW - at) * rate)
redis.call('EXPIRE', k, math.ceil(burst / rate) + SAFETY_S)
-- Never move `at` back: a call stamped before the last refill (clients' clocks and network
-- delays differ) must not refill the same interval twice.
at = math.max(at, NOW)
if tokens >= want then
  redis.call('HSET', k, 'tok', tokens - want, 'at', at)
  return '0'
end
redis.call('HSET', k, 'tok', tokens, 'at', at)
return string.format('%.17g', (want - tokens) / rate)
