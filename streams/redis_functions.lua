#!lua name=streamrec
-- Server-side parts of a streams batch. They run inside the batch's MULTI/EXEC, so
-- they are applied together with the watermark or not at all; doing the loops here
-- costs one command per batch instead of one per key.
-- (Standalone Redis: the functions touch keys derived from their arguments.)

-- Popularity is kept as of its newest event time t; a late event is added with its own
-- decay, so the result does not depend on arrival order. The sorted sets hold
-- log(popularity) + t / tau, which ranks items the same at any later time.
local function update_popularity(item, events, tau_s, tau_l)
  local key = 'is:' .. item
  local h = redis.call('HMGET', key, 's', 'l', 't')
  local s = tonumber(h[1]) or 0
  local l = tonumber(h[2]) or 0
  local t = tonumber(h[3]) or 0
  for i = 1, #events, 2 do
    local ts = events[i]
    local w = events[i + 1]
    if ts >= t then
      s = s * math.exp(-(ts - t) / tau_s) + w
      l = l * math.exp(-(ts - t) / tau_l) + w
      t = ts
    else
      s = s + w * math.exp(-(t - ts) / tau_s)
      l = l + w * math.exp(-(t - ts) / tau_l)
    end
  end
  redis.call('HSET', key, 's', string.format('%.17g', s), 'l', string.format('%.17g', l), 't', string.format('%d', t))
  redis.call('ZADD', 'z:pop:short', string.format('%.17g', math.log(s) + t / tau_s), item)
  redis.call('ZADD', 'z:pop:long', string.format('%.17g', math.log(l) + t / tau_l), item)
  redis.call('ZADD', 'z:trending', string.format('%.17g', s / l), item)
end

-- ARGV[1]: JSON {"tau_s": ms, "tau_l": ms, "top_n": n,
--                "pop": {item: [ts, w, ts, w, ...]}, "cv": [[item, neighbour, count], ...]}
local function apply_statistics(keys, args)
  local batch = cjson.decode(args[1])
  for item, events in pairs(batch.pop) do
    update_popularity(item, events, batch.tau_s, batch.tau_l)
  end
  local touched = {}
  for _, pair in ipairs(batch.cv) do
    local key = 'cv:' .. pair[1]
    redis.call('ZINCRBY', key, pair[3], pair[2])
    touched[key] = true
  end
  for key, _ in pairs(touched) do
    redis.call('ZREMRANGEBYRANK', key, 0, -(batch.top_n + 1))
  end
  return #batch.cv
end

-- KEYS: profile keys; ARGV[1]: TTL in ms, ARGV[2..]: the encoded profiles, in KEYS order.
local function set_profiles(keys, args)
  local ttl = args[1]
  for i, key in ipairs(keys) do
    redis.call('SET', key, args[i + 1], 'PX', ttl)
  end
  return #keys
end

-- KEYS: catalog keys i:{item}; returns, per key, its fields (title is skipped: not needed here).
local function catalog_fields(keys, args)
  local rows = {}
  for i, key in ipairs(keys) do
    rows[i] = redis.call('HMGET', key, 'cat', 'price', 'cur', 'avail', 'ts', 'emb', 'title', 'brand')
  end
  return rows
end

redis.register_function('streamrec_apply_statistics', apply_statistics)
redis.register_function('streamrec_set_profiles', set_profiles)
redis.register_function{function_name = 'streamrec_catalog_fields', callback = catalog_fields, flags = {'no-writes'}}
