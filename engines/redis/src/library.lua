#!lua name=datalayer_v1
-- datalayer-redis: the commit and validation functions (format version 1).
-- Loaded by the engine at connect with FUNCTION LOAD REPLACE. See backend.rs.
--
-- KEYS: 1 the namespace's commit counter, 2 the sorted set of every key,
--       3 the sorted set of bucket names, 4 the hash bucket -> version,
--       then nr data keys that were read, then nw data keys to write.
-- ARGV: 1 nb, 2 nr, 3 nscan, 4 nw, 5 data-key prefix length,
--       6 channel to PUBLISH the new version on ('' = none), 7 ncount,
--       then nr expected versions (8 bytes big-endian; '' = the key was absent; '+' =
--       the key was present, any version: an index entry whose value is in its key),
--       then nscan triples (lowest bucket, highest bucket, counter seen at the scan),
--       then ncount triples (ZLEXCOUNT min, max, the count seen),
--       then nw writes ('p' .. value to put, 'd' to delete),
--       then nb bucket names (the buckets of the written keys, computed by the client).
-- Validation reads only (O(reads + buckets of scanned ranges)); the writes come after
-- it (O(writes)); nothing is written when validation fails.

local function be8(n)
  local b = {}
  for i = 8, 1, -1 do
    b[i] = n % 256
    n = (n - b[i]) / 256
  end
  return string.char(unpack(b))
end

-- redis.call(cmd, [key,] list...) in chunks of at most 1,000 list items (an even
-- number, so that pairs stay whole), within Lua's stack limit for unpack.
local function call_in_chunks(cmd, key, list)
  local n = #list
  local s = 1
  while s <= n do
    local e = math.min(s + 999, n)
    if key then
      redis.call(cmd, key, unpack(list, s, e))
    else
      redis.call(cmd, unpack(list, s, e))
    end
    s = e + 1
  end
end

local function validate(keys, args)
  local nr = tonumber(args[2])
  local nscan = tonumber(args[3])
  local ncount = tonumber(args[7])
  local a = 7
  for i = 1, nr do
    local want = args[a + i]
    local changed
    if want == '+' then
      changed = redis.call('EXISTS', keys[4 + i]) == 0
    else
      changed = redis.call('GETRANGE', keys[4 + i], 0, 7) ~= want
    end
    if changed then
      return redis.error_reply('DLCONFLICT a key read by the transaction (#' .. i .. ') changed')
    end
  end
  a = a + nr
  for j = 0, nscan - 1 do
    local lo = args[a + 3 * j + 1]
    local hi = args[a + 3 * j + 2]
    local seen = tonumber(args[a + 3 * j + 3])
    local buckets = redis.call('ZRANGE', keys[3], lo, hi, 'BYLEX')
    local n = #buckets
    local s = 1
    while s <= n do
      local e = math.min(s + 999, n)
      local vs = redis.call('HMGET', keys[4], unpack(buckets, s, e))
      for _, v in ipairs(vs) do
        if v and tonumber(v) > seen then
          return redis.error_reply('DLCONFLICT a range scanned by the transaction (#' .. (j + 1) .. ') changed')
        end
      end
      s = e + 1
    end
  end
  a = a + 3 * nscan
  for j = 0, ncount - 1 do
    local n = redis.call('ZLEXCOUNT', keys[2], args[a + 3 * j + 1], args[a + 3 * j + 2])
    if n ~= tonumber(args[a + 3 * j + 3]) then
      return redis.error_reply('DLCONFLICT a range read by the transaction (#' .. (j + 1) .. ') gained or lost keys')
    end
  end
  return nil
end

local function commit(keys, args)
  local err = validate(keys, args)
  if err then
    return err
  end
  local nw = tonumber(args[4])
  if nw == 0 then
    return 0
  end
  local nb = tonumber(args[1])
  local dp = tonumber(args[5])
  local nr = tonumber(args[2])
  local c = redis.call('INCR', keys[1])
  local v8 = be8(c)
  local base = 4 + nr
  local a = 7 + nr + 3 * tonumber(args[3]) + 3 * tonumber(args[7])
  -- One variadic call per kind of write (the client sends each key once, so the
  -- order between kinds does not matter).
  local sets, adds, dels, rems = {}, {}, {}, {}
  for i = 1, nw do
    local dk = keys[base + i]
    local raw = string.sub(dk, dp + 1)
    local w = args[a + i]
    if string.byte(w, 1) == 112 then
      sets[#sets + 1] = dk
      sets[#sets + 1] = v8 .. string.sub(w, 2)
      adds[#adds + 1] = 0
      adds[#adds + 1] = raw
    else
      dels[#dels + 1] = dk
      rems[#rems + 1] = raw
    end
  end
  a = a + nw
  local bucket_adds, versions = {}, {}
  for i = 1, nb do
    bucket_adds[#bucket_adds + 1] = 0
    bucket_adds[#bucket_adds + 1] = args[a + i]
    versions[#versions + 1] = args[a + i]
    versions[#versions + 1] = c
  end
  call_in_chunks('MSET', nil, sets)
  call_in_chunks('ZADD', keys[2], adds)
  call_in_chunks('DEL', nil, dels)
  call_in_chunks('ZREM', keys[2], rems)
  call_in_chunks('ZADD', keys[3], bucket_adds)
  call_in_chunks('HSET', keys[4], versions)
  if args[6] ~= '' then
    redis.call('PUBLISH', args[6], c)
  end
  return c
end

-- One atomic read of a range: KEYS 1 the commit counter, 2 the sorted set of every key;
-- ARGV 1 min, 2 max (ZRANGE BYLEX bounds), 3 limit, 4 '1' = reverse, 5 data-key
-- prefix, 6 target prefix ('' = no targets), 7 (optional) most members to read values
-- for. Returns {counter, members, values, targets}: the values of the members' data
-- keys (version .. value) and, with a target prefix, the values of the data keys
-- prefix .. target prefix .. (value without its version). With more members than
-- ARGV 7, values and targets are empty: the client reads them with MGET, cheaper per
-- key than this script (every reply converted to Lua and back). The data keys are not
-- in KEYS: they are built from members of KEYS[2] and share the namespace's hash tag,
-- so they live in the slot of the declared keys. O(limit).
local function scan(keys, args)
  local c = tonumber(redis.call('GET', keys[1]) or '0')
  local members
  if args[4] == '1' then
    members = redis.call('ZRANGE', keys[2], args[2], args[1], 'BYLEX', 'REV', 'LIMIT', 0, args[3])
  else
    members = redis.call('ZRANGE', keys[2], args[1], args[2], 'BYLEX', 'LIMIT', 0, args[3])
  end
  local n = #members
  if args[7] and n > tonumber(args[7]) then
    return {c, members, {}, {}}
  end
  local dp = args[5]
  local values = {}
  for s = 1, n, 1000 do
    local e = math.min(s + 999, n)
    local dk = {}
    for i = s, e do
      dk[#dk + 1] = dp .. members[i]
    end
    local vs = redis.call('MGET', unpack(dk))
    for i = 1, #dk do
      values[s + i - 1] = vs[i]
    end
  end
  local targets = {}
  if args[6] ~= '' then
    local tp = dp .. args[6]
    for s = 1, n, 1000 do
      local e = math.min(s + 999, n)
      local tk = {}
      for i = s, e do
        local v = values[i]
        if v then
          tk[#tk + 1] = tp .. string.sub(v, 9)
        else
          tk[#tk + 1] = tp
        end
      end
      local vs = redis.call('MGET', unpack(tk))
      for i = 1, #tk do
        if values[s + i - 1] then
          targets[s + i - 1] = vs[i]
        else
          targets[s + i - 1] = false
        end
      end
    end
  end
  return {c, members, values, targets}
end

redis.register_function{function_name = 'dl_v1_commit', callback = commit}
redis.register_function{function_name = 'dl_v1_scan', callback = scan, flags = {'no-writes'}}
redis.register_function{
  function_name = 'dl_v1_validate',
  callback = function(keys, args)
    local err = validate(keys, args)
    if err then
      return err
    end
    return 0
  end,
  flags = {'no-writes'}
}
