#!lua name=streamrec
-- Item statistics updated atomically inside Redis (several workers share items).
-- KEYS: is:{item}, z:pop:short, z:pop:long, z:trending
-- ARGV: item id, short time constant (ms), long time constant (ms), then (ts, weight) pairs.
-- Popularity is kept as of its newest event time t; a late event is added with its own
-- decay, so the result does not depend on arrival order. The sorted sets hold
-- log(popularity) + t / tau, which ranks items the same at any later time.
local function item_stats(keys, args)
  local item = args[1]
  local tau_s = tonumber(args[2])
  local tau_l = tonumber(args[3])
  local h = redis.call('HMGET', keys[1], 's', 'l', 't')
  local s = tonumber(h[1]) or 0
  local l = tonumber(h[2]) or 0
  local t = tonumber(h[3]) or 0
  for i = 4, #args, 2 do
    local ts = tonumber(args[i])
    local w = tonumber(args[i + 1])
    if ts >= t then
      s = s * math.exp(-(ts - t) / tau_s) + w
      l = l * math.exp(-(ts - t) / tau_l) + w
      t = ts
    else
      s = s + w * math.exp(-(t - ts) / tau_s)
      l = l + w * math.exp(-(t - ts) / tau_l)
    end
  end
  redis.call('HSET', keys[1], 's', string.format('%.17g', s), 'l', string.format('%.17g', l), 't', string.format('%d', t))
  redis.call('ZADD', keys[2], string.format('%.17g', math.log(s) + t / tau_s), item)
  redis.call('ZADD', keys[3], string.format('%.17g', math.log(l) + t / tau_l), item)
  redis.call('ZADD', keys[4], string.format('%.17g', s / l), item)
  return 1
end
redis.register_function('streamrec_item_stats', item_stats)
