-- The guard's store primitives, interpreted inside Redis: one batch of one hash-tag group per
-- call, so a decision costs one round trip and each group is atomic. The policy never lives
-- here; this is only the primitive interpreter, answering as memory.py does (the reference
-- semantics; this one drops members past a window once per expiry slot, not on every add).
-- The contract is in primitives.py.
--
-- KEYS[i] is the key of the i-th primitive. ARGV[1] is one MessagePack array holding, for each
-- primitive in order, its opcode and then its arguments after the key (arity fixed per opcode,
-- see ARITY in script_calls.py): one argument instead of dozens, because encoding each argument
-- is most of what a call costs the client. MessagePack, not JSON: Redis's cmsgpack unpacks a
-- lookup's arguments in about half the time cjson parsed them (2.6 against 4.7 µs).
--
-- Windows keep their times in whole milliseconds since the epoch: the store sends every time
-- and window of the window primitives (add, add_members, note, count, count_if, members) as an
-- integer of milliseconds (script_calls.encode) and reads scores back as such. An integral
-- score is what Redis stores and formats cheaply: a listpack keeps it as an integer and
-- d2string writes it with ll2string, where a fraction of a second took snprintf("%.17g") on
-- every ZADD and strtod on every comparison; with string.format('%.17g') here, a fifth of what
-- a lookup cost Redis (valgrind --tool=callgrind, 2026-12-05). Scores leave as strings, as
-- Redis answers them. Ticks, appends and values keep seconds (no scores: hash fields, stream
-- ids, TTLs). A store written before milliseconds is converted once (redis_store.py).

local call = redis.call
local tonumber = tonumber
local format = string.format
local ceil = math.ceil
local floor = math.floor

-- A window key expires `window` after the end of its newest member's slot (window / 8, at most
-- an hour: window_expiry in primitives.py; here in milliseconds), set by each proxy process's
-- first add of a slot (or an add to an empty window), so other adds leave the TTL as it is: no
-- PEXPIRE, which was a fifth of a lookup's commands.
local function slot_of(window)
  local slot = window / 8
  if slot > 3600000 then slot = 3600000 end
  return slot
end

-- The TTL (ms, a string) of a window whose newest member is scored `score`, at `now`.
local function expiry(score, now, window, slot)
  if slot <= 0 then
    return format('%d', ceil(score - now + window))
  end
  return format('%d', ceil((floor(score / slot) + 1) * slot - now + window))
end

-- A bit set of two generations (sight): a 32-bit header, the generation the key was last
-- turned to, then one half of BIT_SET_BITS bits for even generations and one for odd ones.
local BIT_HEADER = 32
local BIT_SET_BITS = 65536
-- The zeros that clear one half, made only when a generation turns: the script's top level runs
-- on every call (EVALSHA calls the body again), and building 8 KiB with string.rep there was a
-- quarter of what a lookup cost redis-server (bench/instructions.py --redis-server, 2026-12-07).
local half_zeros_made
local function half_zeros()
  if half_zeros_made == nil then
    half_zeros_made = string.rep('\0', BIT_SET_BITS / 8)
  end
  return half_zeros_made
end

-- Numbers handed to redis.call as themselves are turned into strings by Lua's '%.14g', a
-- floating-point conversion: formatted as integers here ('%d'), or written as strings where they
-- are constants, they cost a third as much (5 % of what a lookup cost redis-server went to
-- glibc's printf_fp, bench/instructions.py --redis-server, 2026-12-07).
local function int(x)
  return format('%d', x)
end

-- BITFIELD arguments setting bit `base + o` to 1 for each offset o (the reply: the old bits).
local function set_ops(args, base, offsets)
  for i = 1, #offsets do
    args[#args + 1] = 'SET'
    args[#args + 1] = 'u1'
    args[#args + 1] = int(base + offsets[i])
    args[#args + 1] = '1'
  end
  return args
end

-- Whether a BITFIELD reply holds a clear bit among its entries first..last.
local function any_clear(bits, first, last)
  for i = first, last do
    if bits[i] == 0 then return true end
  end
  return false
end

-- Scores as strings, memoised for the call: a lookup's primitives share their now and its
-- windows repeat. Integers: '%d' is an integer conversion, '%.17g' was a float one.
local scores = {}
local function score_of(x)
  local s = scores[x]
  if s == nil then
    s = format('%d', x)
    scores[x] = s
  end
  return s
end
local after = {}
local function after_of(x)
  local s = after[x]
  if s == nil then
    s = '(' .. format('%d', x)
    after[x] = s
  end
  return s
end

-- An add's score: now, unless the process's clock stepped back (stepped is 1) and the window
-- holds a newer member, whose score the add then takes: a step back must not break the time
-- order. Returns the score as a string and as a number.
local function placed(key, now, stepped)
  if stepped == 1 then
    local newest = call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
    if newest and tonumber(newest) > now then
      return newest, tonumber(newest)
    end
  end
  return score_of(now), now
end

-- After an add's ZADD, on the process's first add of the slot (fresh): set the TTL if the key
-- had none. True when it had none, so is new (every window key gets one on its first add):
-- then its count is one and nothing is to be trimmed. Most such keys are blocks nobody looked
-- into lately; a count would cost as much as the add.
local function first_ttl(key, fresh, at, now, window)
  return fresh == 1 and call('PEXPIRE', key, expiry(at, now, window, slot_of(window)), 'NX') == 1
end

-- After an add that counted its window (count): a window with nothing else in it (an expired
-- key, or one Redis lost while this process had refreshed the slot) gets its TTL; what is past
-- the window stays until an add finds company. Otherwise, on the process's first add of the
-- slot, members older than the window go and the TTL is refreshed, once per slot rather than
-- on every add (every count and read looks inside the window anyway); another process may
-- have set a later TTL (its clock ahead), which GT never shortens.
local function settle(key, count, fresh, at, now, window)
  local slot = slot_of(window)
  if count == 1 then
    call('PEXPIRE', key, expiry(at, now, window, slot))
  elseif fresh == 1 then
    call('ZREMRANGEBYSCORE', key, '-inf', score_of(now - window))
    call('PEXPIRE', key, expiry(at, now, window, slot), 'GT')
  end
end

local argv = cmsgpack.unpack(ARGV[1])
local results = {}
local a = 1
local logs, log_keys = {}, {}

for k = 1, #KEYS do
  local key = KEYS[k]
  local code = argv[a]

  if code == 'add' or code == 'add_members' then
    -- ("add", key, now, member, window, cap, nth, fresh, stepped) -> {count, nth_score|false,
    -- oldest|false}. The store adds the last two (redis_store.py): fresh is 1 on this proxy
    -- process's first add to the key in the expiry slot of now, stepped is 1 when now is more
    -- than a second before the latest now the process sent (its clock stepped back). Neither
    -- needs the window's newest score, which cost a ZRANGE on every add (a fifth of a lookup's
    -- commands); Redis reads it only for a step back.
    -- ("add_members", ...the same) -> {count, nth_score|false, members}: the window's members
    -- (oldest first) come back in place of the oldest score, and their number is the count:
    -- two commands where an add and a read of the members were four.
    local listed = code == 'add_members'
    local now, member, window, cap, nth = argv[a + 1], argv[a + 2], argv[a + 3], argv[a + 4], argv[a + 5]
    local fresh, stepped = argv[a + 6], argv[a + 7]
    a = a + 8
    local score, at = placed(key, now, stepped)
    call('ZADD', key, score, member)
    local count, members
    if first_ttl(key, fresh, at, now, window) then
      count = 1
      members = {member}
    else
      if listed then
        members = call('ZRANGEBYSCORE', key, after_of(now - window), '+inf')
        count = #members
      else
        count = call('ZCOUNT', key, after_of(now - window), '+inf')
      end
      settle(key, count, fresh, at, now, window)
    end
    if count > cap then
      -- The newest `cap` stay; anything older goes, past the window or not.
      call('ZREMRANGEBYRANK', key, 0, -cap - 1)
      if listed then
        local kept = {}
        for i = count - cap + 1, count do
          kept[#kept + 1] = members[i]
        end
        members = kept
      end
      count = cap
    end
    local nth_score = false
    if nth > 0 and nth <= count then
      nth_score = call('ZRANGE', key, -nth, -nth, 'WITHSCORES')[2]
    end
    if listed then
      results[k] = {count, nth_score, members}
    else
      local oldest = false
      if nth > 0 then
        oldest = call('ZRANGEBYSCORE', key, after_of(now - window), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
      end
      results[k] = {count, nth_score, oldest}
    end

  elseif code == 'note' then
    -- ("note", key, now, member, window, cap, fresh, stepped) -> false: an add whose count
    -- nobody reads. Members past the window and past the newest cap go with the process's
    -- first note of the slot, with the TTL; every other note is one ZADD.
    local now, member, window, cap = argv[a + 1], argv[a + 2], argv[a + 3], argv[a + 4]
    local fresh, stepped = argv[a + 5], argv[a + 6]
    a = a + 7
    local score, at = placed(key, now, stepped)
    call('ZADD', key, score, member)
    if fresh == 1 and not first_ttl(key, fresh, at, now, window) then
      call('ZREMRANGEBYSCORE', key, '-inf', score_of(now - window))
      call('ZREMRANGEBYRANK', key, 0, -cap - 1)
      call('PEXPIRE', key, expiry(at, now, window, slot_of(window)), 'GT')
    end
    results[k] = false

  elseif code == 'count' then
    -- ("count", key, since) -> members scored after since
    results[k] = call('ZCOUNT', key, after_of(argv[a + 1]), '+inf')
    a = a + 2

  elseif code == 'count_if' then
    -- ("count_if", key, since, over) -> the count when the previous primitive's result (a
    -- count of this call) is above over, else false: asked only when it can matter
    local previous = results[k - 1]
    if type(previous) == 'number' and previous > argv[a + 2] then
      results[k] = call('ZCOUNT', key, after_of(argv[a + 1]), '+inf')
    else
      results[k] = false
    end
    a = a + 3

  elseif code == 'members' then
    -- ("members", key, since) -> those members, oldest first
    results[k] = call('ZRANGEBYSCORE', key, after_of(argv[a + 1]), '+inf')
    a = a + 2

  elseif code == 'get' then
    -- ("get", key, now) -> value or false; Redis expires values on its own clock
    results[k] = call('GET', key)
    a = a + 2

  elseif code == 'set' then
    -- ("set", key, value, ttl, now) -> 1; ttl 0 means no expiry (and clears an old one)
    local ttl = argv[a + 2]
    if ttl > 0 then
      call('SET', key, argv[a + 1], 'PX', format('%d', ceil(ttl * 1000)))
    else
      call('SET', key, argv[a + 1])
    end
    results[k] = 1
    a = a + 4

  elseif code == 'remove' then
    -- ("remove", key, member) -> 1 if it was there, else 0. The window's last member is not
    -- removed but re-scored to -inf, which every count and read looks past: Redis would drop
    -- the emptied key and its TTL, and a process that refreshed the key's slot would re-create
    -- it with a note (no count, so no TTL). A placeholder is not there for score and remove.
    local member = argv[a + 1]
    local was = call('ZSCORE', key, member)
    if not was or was == '-inf' then
      results[k] = 0
    else
      if call('ZCARD', key) == 1 then
        call('ZADD', key, '-inf', member)
      else
        call('ZREM', key, member)
      end
      results[k] = 1
    end
    a = a + 2

  elseif code == 'delete' then
    -- ("delete", key) -> 1 if something was deleted, else 0
    results[k] = call('DEL', key)
    a = a + 1

  elseif code == 'score' then
    -- ("score", key, member) -> the member's score (a string, as for add) or false (also for
    -- a removed last member's placeholder)
    local score = call('ZSCORE', key, argv[a + 1])
    if score == '-inf' then score = false end
    results[k] = score
    a = a + 2

  elseif code == 'incr' then
    -- ("incr", key, field, amount, ttl) -> the field's new value; a field started from zero
    -- sets the TTL (ttl from now), other increments leave it
    local amount = argv[a + 2]
    local value = call('HINCRBY', key, argv[a + 1], int(amount))
    if value == amount then
      call('PEXPIRE', key, format('%d', ceil(argv[a + 3] * 1000)))
    end
    results[k] = value
    a = a + 4

  elseif code == 'mark' then
    -- ("mark", key, field, ttl, now, cap, fresh) -> 1 when the tally had no such field (it is
    -- now 1), else 0: one HSETNX. With the process's first mark of the key in the hour
    -- (fresh), a tally past cap starts over, and the TTL is set unless the key has one.
    local field, ttl, cap, fresh = argv[a + 1], argv[a + 2], argv[a + 4], argv[a + 5]
    a = a + 6
    if fresh == 1 and call('HLEN', key) >= cap then
      call('DEL', key)
    end
    results[k] = call('HSETNX', key, field, '1')
    if fresh == 1 then
      call('PEXPIRE', key, format('%d', ceil(ttl * 1000)), 'NX')
    end

  elseif code == 'sight' then
    -- ("sight", key, offsets, generation, ttl, now) -> 1 when the number is new to this
    -- generation and to the one before, else 0. One BITFIELD turns the header to this
    -- generation (answering the one it held), sets the bits in this generation's half and
    -- reads them in the other's. The key's first sight of a generation (or its first at all)
    -- also clears what is older than the generation before and sets its time to live.
    local offsets, generation, ttl = argv[a + 1], argv[a + 2], argv[a + 3]
    a = a + 5
    local n = #offsets
    local here = BIT_HEADER + (generation % 2) * BIT_SET_BITS
    local there = BIT_HEADER + ((generation + 1) % 2) * BIT_SET_BITS
    local args = set_ops({'SET', 'u32', '0', int(generation)}, here, offsets)
    for i = 1, n do
      args[#args + 1] = 'GET'
      args[#args + 1] = 'u1'
      args[#args + 1] = int(there + offsets[i])
    end
    local reply = call('BITFIELD', key, unpack(args))
    local held = reply[1]
    local new_here = any_clear(reply, 2, n + 1)
    local new_there = any_clear(reply, n + 2, 2 * n + 1)
    if held == 0 then
      -- a new key: nothing to clear
      call('PEXPIRE', key, format('%d', ceil(ttl * 1000)))
    elseif held > generation then
      -- this process is a moment behind the key's turn: its half is the generation before
      call('BITFIELD', key, 'SET', 'u32', '0', held)
    elseif held < generation then
      -- this half held generation `generation - 2` or older: forgotten, then set again
      call('SETRANGE', key, here / 8, half_zeros())
      if held < generation - 1 then
        call('SETRANGE', key, there / 8, half_zeros())
        new_there = true
      end
      call('BITFIELD', key, unpack(set_ops({}, here, offsets)))
      new_here = true
      call('PEXPIRE', key, format('%d', ceil(ttl * 1000)))
    end
    results[k] = (new_here and new_there) and 1 or 0

  elseif code == 'fields' then
    -- ("fields", key) -> {field, value, ...} with values as integers
    local flat = call('HGETALL', key)
    for i = 2, #flat, 2 do
      flat[i] = tonumber(flat[i])
    end
    results[k] = flat
    a = a + 1

  elseif code == 'pick' then
    -- ("pick", key, fields) -> those fields' values, integers or false (missing)
    local got = call('HMGET', key, unpack(argv[a + 1]))
    for i = 1, #got do
      if got[i] then got[i] = tonumber(got[i]) end
    end
    results[k] = got
    a = a + 2

  elseif code == 'tick' then
    -- ("tick", key, now, width, window) -> {bucket, count, ...} of the buckets in the window.
    -- Old buckets go, and the TTL is set, with the first tick of a tick period (half a window:
    -- tick_period and tick_expiry in primitives.py), so a tick is two commands.
    local now, width, window = argv[a + 1], argv[a + 2], argv[a + 3]
    a = a + 4
    local bucket = floor(now / width)
    local field = format('%d', bucket)
    local value = call('HINCRBY', key, field, '1')
    local flat = call('HGETALL', key)
    local first = floor((now - window) / width)
    local half = window / 2
    local live = {}
    local stale = {}
    local newest = nil
    for i = 1, #flat, 2 do
      local b = tonumber(flat[i])
      if b >= first then
        live[#live + 1] = b
        live[#live + 1] = tonumber(flat[i + 1])
      else
        stale[#stale + 1] = flat[i]
      end
      if b ~= bucket and (newest == nil or b > newest) then newest = b end
    end
    if value == 1 then
      local period = floor(bucket * width / half)
      if newest == nil or floor(newest * width / half) < period then
        if #stale > 0 then call('HDEL', key, unpack(stale)) end
        local ends = (period + 1) * half
        if (bucket + 1) * width > ends then ends = (bucket + 1) * width end
        call('PEXPIRE', key, format('%d', ceil((ends + window - now) * 1000)))
      end
    end
    results[k] = live

  elseif code == 'append' then
    -- ("append", key, entry, now, keep) -> the entry's stream id; entries older than keep go.
    -- A call's appends to one log share one stream entry, its value their entries joined by
    -- newlines (appended below, after every other primitive): one XADD a call instead of one
    -- an entry, two a lookup (its record and its outcome's) under load.
    local cutoff = argv[a + 2] - argv[a + 3]
    local log = logs[key]
    if log == nil then
      log = {entries = {}, slots = {}, cutoff = cutoff}
      logs[key] = log
      log_keys[#log_keys + 1] = key
    elseif cutoff > log.cutoff then
      log.cutoff = cutoff
    end
    log.entries[#log.entries + 1] = argv[a + 1]
    log.slots[#log.slots + 1] = k
    a = a + 4

  else
    return redis.error_reply('unknown store primitive ' .. tostring(code))
  end
end

for i = 1, #log_keys do
  local key = log_keys[i]
  local log = logs[key]
  local minid = format('%d', floor(log.cutoff * 1000))
  local id = call('XADD', key, 'MINID', '~', minid, '*', 'r', table.concat(log.entries, '\n'))
  for j = 1, #log.slots do results[log.slots[j]] = id end
end

return results
