#!lua name=streamrec
-- Server-side parts of a streams batch, and the HTTP services' rate limit. The batch's writing
-- functions run inside the batch's MULTI/EXEC, so they are applied together with the watermark
-- or not at all; doing the loops here costs one command per batch instead of one per key.
-- Every key comes in KEYS and every field name in the arguments (streamrec/store/layout.py
-- owns the layout): nothing here builds a key, so each call names all the keys it touches.

-- Popularity is kept as of its newest event time t; a late event is added with its own
-- decay, so the result does not depend on arrival order. The ranking holds
-- log(short popularity) + t / tau_s, which ranks items the same at any later time.
local function update_popularity(key, ranking, item, events, fields, tau_s, tau_l)
  local h = redis.call('HMGET', key, fields[1], fields[2], fields[3])
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
  redis.call('HSET', key, fields[1], string.format('%.17g', s), fields[2], string.format('%.17g', l),
             fields[3], string.format('%d', t))
  redis.call('ZADD', ranking, string.format('%.17g', math.log(s) + t / tau_s), item)
end

-- KEYS[1]: the short-term popularity ranking; then one item-statistics hash per entry of
-- "pop", in order; then one co-visitation set per entry of "cv", in order.
-- ARGV[1]: JSON {"tau_s": ms, "tau_l": ms, "top_n": n, "fields": [short, long, time],
--                "pop": [[item, [ts, w, ts, w, ...]], ...],
--                "cv": [[neighbour, count, neighbour, count, ...], ...]}
-- Returns the number of co-visit increments applied.
local function apply_statistics(keys, args)
  local batch = cjson.decode(args[1])
  local popular = #batch.pop
  if #keys ~= 1 + popular + #batch.cv then
    return redis.error_reply('streamrec_apply_statistics: ' .. #keys .. ' keys for ' .. popular .. ' items and '
                             .. #batch.cv .. ' co-visit sets')
  end
  for i, entry in ipairs(batch.pop) do
    update_popularity(keys[1 + i], keys[1], entry[1], entry[2], batch.fields, batch.tau_s, batch.tau_l)
  end
  local increments = 0
  for i, neighbours in ipairs(batch.cv) do
    local key = keys[1 + popular + i]
    for j = 1, #neighbours, 2 do
      redis.call('ZINCRBY', key, neighbours[j + 1], neighbours[j])
      increments = increments + 1
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(batch.top_n + 1))
  end
  return increments
end

-- KEYS: profile keys; ARGV[1]: TTL in ms, ARGV[2..]: the encoded profiles, in KEYS order.
local function set_profiles(keys, args)
  local ttl = args[1]
  for i, key in ipairs(keys) do
    redis.call('SET', key, args[i + 1], 'PX', ttl)
  end
  return #keys
end

-- KEYS: hashes; ARGV: the field names to read. Returns, per key, the values in ARGV order
-- (HMGET for many keys in one command: a batch's catalog records).
local function hash_fields(keys, args)
  local rows = {}
  for i, key in ipairs(keys) do
    rows[i] = redis.call('HMGET', key, unpack(args))
  end
  return rows
end

-- GCRA (the generic cell rate algorithm, a token bucket kept as one number): KEYS[1] holds the
-- theoretical arrival time (TAT, microseconds of this server's clock) when the bucket would be
-- full again. A request is allowed when, after adding one interval, the TAT is at most
-- burst intervals ahead of now. One key per limit, read and written in one call, with Redis's
-- own clock, so every replica of a service shares the limit and their clocks do not matter.
-- ARGV[1]: interval in microseconds (1e6 / rate), ARGV[2]: burst (requests allowed at once).
-- Returns {1, 0} when allowed, else {0, microseconds until one request would be}.
local function rate_limit(keys, args)
  local interval = tonumber(args[1])
  local burst = tonumber(args[2])
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local tat = tonumber(redis.call('GET', keys[1])) or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval
  local allowed_at = new_tat - interval * burst
  if allowed_at > now then
    return {0, allowed_at - now}
  end
  redis.call('SET', keys[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
  return {1, 0}
end

redis.register_function('streamrec_apply_statistics', apply_statistics)
redis.register_function('streamrec_set_profiles', set_profiles)
redis.register_function{function_name = 'streamrec_hash_fields', callback = hash_fields, flags = {'no-writes'}}
redis.register_function('streamrec_rate_limit', rate_limit)
