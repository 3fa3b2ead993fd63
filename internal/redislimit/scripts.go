package redislimit

import "github.com/redis/go-redis/v9"

// lib is the part common to every script: limit.Limiter's bucket and
// counter rules, in microseconds. Lua numbers are doubles, exact to 2^53;
// Unix microseconds (about 1.8e15) are, Unix nanoseconds are not. Costs are
// rounded up to whole microseconds, so that rounding never admits more than
// the limit.
//
// A limiter's state is the hash at its lim key (fields below); its requests
// in flight are the live members of the sorted set at its lease key, scored
// by their expiry. A reservation's record, at its res key, holds what it
// took from each limiter, so that settling, retiming and cancelling are
// exact, and happen once however often a command is retried.
const lib = `
local MIN = 60000000
local DAY = 86400000000
local UPWIN = 1000000
local MAXC = 1152921504606847
local EXACT = 9007199254740992
local TOP = EXACT - 2 * MAXC
local KEEP = 2 * 86400000

local F = {'rl','rt','rs','rp','tl','tt','ts','tp','day','rq','tq','cool','lr','lt'}

local function fmt(x) return string.format('%.0f', x) end

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function load(key)
  local v = redis.call('HMGET', key, unpack(F))
  local s = {}
  for i, f in ipairs(F) do s[f] = tonumber(v[i]) or 0 end
  s.req = {limit = s.rl, tat = s.rt, sent = s.rs, pending = s.rp, burst = 0, margin = 0, tau = 0}
  s.tok = {limit = s.tl, tat = s.tt, sent = s.ts, pending = s.tp, burst = 0, margin = 0, tau = 0}
  return s
end

local function save(key, s, t)
  s.rl, s.rt, s.rs, s.rp = s.req.limit, s.req.tat, s.req.sent, s.req.pending
  s.tl, s.tt, s.ts, s.tp = s.tok.limit, s.tok.tat, s.tok.sent, s.tok.pending
  local args = {}
  for _, f in ipairs(F) do
    args[#args + 1] = f
    args[#args + 1] = fmt(s[f])
  end
  redis.call('HSET', key, unpack(args))
  local horizon = math.max(s.cool, s.rt, s.tt, t)
  redis.call('PEXPIRE', key, fmt(math.floor((horizon - t) / 1000) + KEEP))
end

-- live counts the leases that have not expired at t.
local function live(lease, t)
  return redis.call('ZCOUNT', lease, '(' .. fmt(t), '+inf')
end

local function state(out, s, inflight, t)
  for _, v in ipairs({t, s.req.limit, s.req.tat, s.req.sent, s.req.pending,
      s.tok.limit, s.tok.tat, s.tok.sent, s.tok.pending,
      s.day, s.rq, s.tq, inflight, s.cool, s.lr, s.lt}) do
    out[#out + 1] = v
  end
end

-- ceildiv is the ceiling of a / b for positive integers a < 2^53.
local function ceildiv(a, b)
  local q = math.floor(a / b)
  if q * b < a then q = q + 1 end
  if q > 0 and (q - 1) * b >= a then q = q - 1 end
  return q
end

local function cost(b, n)
  if n <= 0 or b.limit <= 0 then return 0 end
  local c
  if n * MIN < EXACT then
    c = ceildiv(n * MIN, b.limit)
  else
    local q = math.floor(n / b.limit)
    local r = n - q * b.limit
    if r * MIN < EXACT then
      c = q * MIN + ceildiv(r * MIN, b.limit)
    else
      c = q * MIN + math.ceil(r * MIN / b.limit) + 1
    end
  end
  return math.min(c, MAXC)
end

local function price(b, n)
  local c = cost(b, n)
  return c + math.min(math.max(c - b.burst, 0), b.margin)
end

local function capped(b, n)
  if b.limit > 0 then return math.min(n, b.limit) end
  return n
end

local function backlog(b, t) return math.max(b.tat - t, 0) end

local function fits(b, t, c)
  if b.limit == 0 then return 0, true end
  local allow = math.max(b.tau, c)
  if backlog(b, t) + c <= allow then return 0, true end
  return b.tat + c - allow, false
end

local function take(b, t, c) b.tat = math.min(math.max(b.tat, t), TOP) + c end
local function give(b, c) b.tat = math.max(b.tat - c, 0) end

local function release(b, c, wasSent)
  give(b, c)
  if wasSent then b.sent = math.max(b.sent - c, 0) else b.pending = math.max(b.pending - c, 0) end
end

local function markSent(b, t, c)
  b.pending = math.max(b.pending - c, 0)
  b.sent = math.min(math.max(b.sent, t), TOP) + c
  b.tat = math.max(b.tat, b.sent + b.pending)
end

-- configure is bucket.configure: a backlog is kept in units across a rate
-- change, computed as the Go code does (in doubles, in ns, truncated) and
-- then rounded up to the microsecond.
local function configure(b, t, limit, burst)
  if limit <= 0 then
    b.limit, b.tat, b.sent, b.pending, b.burst, b.margin, b.tau = 0, 0, 0, 0, 0, 0, 0
    return
  end
  if b.limit > 0 and b.limit ~= limit then
    local d = backlog(b, t)
    if d > 0 then
      local v = math.floor(math.min((d * 1000) * b.limit / limit, MAXC * 1000))
      b.tat = t + math.ceil(v / 1000)
    end
    b.sent, b.pending = 0, 0
  end
  b.limit = limit
  b.burst = burst
  b.margin = math.max(UPWIN - burst, 0)
  b.tau = math.max(b.burst, price(b, 1))
end

-- limits reads the six limit arguments from ARGV[a].
local function limits(a)
  return {rpm = tonumber(ARGV[a]), tpm = tonumber(ARGV[a + 1]), rpd = tonumber(ARGV[a + 2]),
    tpd = tonumber(ARGV[a + 3]), maxc = tonumber(ARGV[a + 4]), burst = tonumber(ARGV[a + 5])}
end

local function today(s, d)
  if d > s.day then return 0, 0 end
  return s.rq, s.tq
end

-- check is Limiter.check; request is false for tokens alone.
local function check(s, lim, t, n, inflight, request)
  local ok, at, cr = true, 0, 0
  if s.cool > t then at, ok = s.cool, false end
  local a, fit
  if request then
    cr = price(s.req, 1)
    a, fit = fits(s.req, t, cr)
    if not fit then at, ok = math.max(at, a), false end
  end
  local ct = price(s.tok, capped(s.tok, n))
  a, fit = fits(s.tok, t, ct)
  if not fit then at, ok = math.max(at, a), false end
  local d = math.floor(t / DAY)
  local reqs, toks = today(s, d)
  if request and lim.rpd > 0 and reqs >= lim.rpd then at, ok = math.max(at, (math.max(d, s.day) + 1) * DAY), false end
  if lim.tpd > 0 and toks + n > lim.tpd and (toks > 0 or n <= lim.tpd) then
    at, ok = math.max(at, (math.max(d, s.day) + 1) * DAY), false
  end
  if request and lim.maxc > 0 and inflight >= lim.maxc then at, ok = 0, false end
  return cr, ct, at, ok
end

-- took decodes a record's took: whether it took from the request bucket,
-- from the token bucket, and whether it was tokens alone (no request, no
-- daily request, no lease), as limit's took flags.
local function tookOf(took)
  return took % 2 == 1, math.floor(took / 2) % 2 == 1, took >= 4
end

-- record reads a reservation's record: its tokens, whether it was sent, and
-- for each limiter {cr, ct, bucket tokens, day, took}; nil if there is none.
local function record(key, m)
  local v = redis.call('HMGET', key, 'n', 's')
  if not v[1] then return nil end
  local r = {n = tonumber(v[1]), sent = v[2] == '1', items = {}}
  for i = 1, m do
    local it = {}
    for x in string.gmatch(redis.call('HGET', key, 'c' .. i) or '', '%S+') do it[#it + 1] = tonumber(x) end
    r.items[i] = it
  end
  return r
end

-- bumplease makes the lease set live as long as its longest lease.
local function bumplease(lease, t)
  local top = redis.call('ZRANGE', lease, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIRE', lease, fmt(math.max(math.ceil((tonumber(top[2]) - t) / 1000), 1)))
  end
end
`

// reserveScript is Store.Reserve and Store.ReserveTokens. KEYS: the record,
// then each limiter's lim and lease keys. ARGV: reservation id, tokens,
// lease TTL µs, 1 for a request or 0 for tokens alone, then six limits per
// limiter (rpm tpm rpd tpd max_concurrent burst_µs). Reply: ok,
// time, retry, five numbers per limiter (cr ct bucket_tokens day took),
// then 16 per limiter (the state, see state).
var reserveScript = redis.NewScript(lib + `
local t = clock()
local rid, n, ttl, request = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local m = (#KEYS - 1) / 2
local ss, lims, inflight = {}, {}, {}
for i = 1, m do
  local s = load(KEYS[2 * i])
  local lim = limits(5 + (i - 1) * 6)
  configure(s.req, t, lim.rpm, lim.burst)
  configure(s.tok, t, lim.tpm, lim.burst)
  redis.call('ZREMRANGEBYSCORE', KEYS[2 * i + 1], '-inf', fmt(t))
  ss[i], lims[i], inflight[i] = s, lim, redis.call('ZCARD', KEYS[2 * i + 1])
end
local out = {0, t, 0}
local rec = record(KEYS[1], m)
if rec then
  -- A retry of a reservation already made: report it, take nothing.
  out[1] = 1
  for i = 1, m do for j = 1, 5 do out[#out + 1] = rec.items[i][j] or 0 end end
else
  local ok, retry, costs = true, 0, {}
  for i = 1, m do
    local cr, ct, at, fit = check(ss[i], lims[i], t, n, inflight[i], request)
    costs[i] = {cr, ct}
    if not fit then ok, retry = false, math.max(retry, at) end
  end
  if ok then
    out[1] = 1
    local fields = {'n', fmt(n), 's', '0'}
    for i = 1, m do
      local s = ss[i]
      local d = math.floor(t / DAY)
      if d > s.day then s.day, s.rq, s.tq = d, 0, 0 end
      s.tq = s.tq + n
      local cr, ct, took = costs[i][1], costs[i][2], 0
      if request then
        s.rq = s.rq + 1
        if s.req.limit > 0 then take(s.req, t, cr); s.req.pending = s.req.pending + cr; took = took + 1 end
        redis.call('ZADD', KEYS[2 * i + 1], fmt(t + ttl), rid)
        bumplease(KEYS[2 * i + 1], t)
        inflight[i] = inflight[i] + 1
      else
        took = took + 4
      end
      if s.tok.limit > 0 then take(s.tok, t, ct); s.tok.pending = s.tok.pending + ct; took = took + 2 end
      local bt = capped(s.tok, n)
      fields[#fields + 1] = 'c' .. i
      fields[#fields + 1] = fmt(cr) .. ' ' .. fmt(ct) .. ' ' .. fmt(bt) .. ' ' .. fmt(s.day) .. ' ' .. took
      out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4], out[#out + 5] = cr, ct, bt, s.day, took
    end
    redis.call('HSET', KEYS[1], unpack(fields))
    redis.call('PEXPIRE', KEYS[1], fmt(math.ceil(ttl / 1000)))
  else
    out[3] = retry
    for i = 1, m * 5 do out[#out + 1] = 0 end
  end
end
for i = 1, m do
  save(KEYS[2 * i], ss[i], t)
  state(out, ss[i], inflight[i], t)
end
return out
`)

// finishScript is Store.Settle, Store.Retime and Store.Cancel. KEYS: the
// record, then each limiter's lim and lease keys. ARGV: reservation id,
// what ("settle", "retime", "cancel"), actual tokens. Reply: whether the
// record was there (0 when it was settled, cancelled or expired before),
// time, then 16 numbers per limiter.
var finishScript = redis.NewScript(lib + `
local t = clock()
local rid, what, actual = ARGV[1], ARGV[2], tonumber(ARGV[3])
local m = (#KEYS - 1) / 2
local rec = record(KEYS[1], m)
local out = {0, t}
local apply = rec and not (what == 'retime' and rec.sent)
if apply then out[1] = 1 end
if apply and what == 'retime' then
  redis.call('HSET', KEYS[1], 's', '1')
elseif apply then
  redis.call('DEL', KEYS[1])
end
for i = 1, m do
  local lim, lease = KEYS[2 * i], KEYS[2 * i + 1]
  local s = load(lim)
  if apply then
    local it = rec.items[i]
    local cr, ct, bt, day, took = it[1] or 0, it[2] or 0, it[3] or 0, it[4] or 0, it[5] or 0
    local tookReq, tookTok, tokensOnly = tookOf(took)
    if what == 'retime' then
      if tookReq and s.req.limit > 0 then markSent(s.req, t, cr) end
      if tookTok and s.tok.limit > 0 then markSent(s.tok, t, ct) end
    elseif what == 'cancel' then
      redis.call('ZREM', lease, rid)
      if tookReq and s.req.limit > 0 then release(s.req, cr, rec.sent) end
      if tookTok and s.tok.limit > 0 then release(s.tok, ct, rec.sent) end
      if day == s.day then
        if not tokensOnly then s.rq = math.max(s.rq - 1, 0) end
        s.tq = math.max(s.tq - rec.n, 0)
      end
    else
      redis.call('ZREM', lease, rid)
      if not rec.sent then
        if tookReq then s.req.pending = math.max(s.req.pending - cr, 0) end
        if tookTok then s.tok.pending = math.max(s.tok.pending - ct, 0) end
      end
      if tookTok and s.tok.limit > 0 then
        local d = capped(s.tok, actual) - bt
        if d > 0 then
          local c = cost(s.tok, d)
          take(s.tok, t, c)
          if rec.sent then s.tok.sent = math.min(math.max(s.tok.sent, t), TOP) + c end
        elseif d < 0 then
          release(s.tok, cost(s.tok, -d), true)
        end
      end
      if day == s.day then s.tq = math.max(s.tq + actual - rec.n, 0) end
    end
    save(lim, s, t)
  end
  state(out, s, live(lease, t), t)
end
return out
`)

// raiseScript is Store.Raise and Store.Lift. KEYS: lim, lease. ARGV: six
// limits, learned rpm, learned tpm, req tat µs, tok tat µs, cool µs, and
// "lift" to clear the cool-down instead. Reply: 16 numbers (the state).
var raiseScript = redis.NewScript(lib + `
local t = clock()
local s = load(KEYS[1])
if ARGV[12] == 'lift' then
  s.cool = 0
else
  local lim = limits(1)
  configure(s.req, t, lim.rpm, lim.burst)
  configure(s.tok, t, lim.tpm, lim.burst)
  local lr, lt = tonumber(ARGV[7]), tonumber(ARGV[8])
  if lr > 0 then s.lr = lr end
  if lt > 0 then s.lt = lt end
  local rt, tt, cool = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  if rt > 0 and s.req.limit > 0 then s.req.tat = math.max(s.req.tat, rt) end
  if tt > 0 and s.tok.limit > 0 then s.tok.tat = math.max(s.tok.tat, tt) end
  s.cool = math.max(s.cool, cool)
end
save(KEYS[1], s, t)
local out = {}
state(out, s, live(KEYS[2], t), t)
return out
`)

// restoreScript is Store.RestoreDaily. KEYS: lim, lease. ARGV: day number,
// requests, tokens. Reply: 16 numbers.
var restoreScript = redis.NewScript(lib + `
local t = clock()
local s = load(KEYS[1])
local d, rq, tq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if d > s.day then
  s.day, s.rq, s.tq = d, math.max(rq, 0), math.max(tq, 0)
elseif d == s.day then
  s.rq, s.tq = math.max(s.rq, rq), math.max(s.tq, tq)
end
save(KEYS[1], s, t)
local out = {}
state(out, s, live(KEYS[2], t), t)
return out
`)

// loadScript is Store.Load. KEYS: lim and lease keys per limiter. Reply: 16
// numbers per limiter. It writes nothing.
var loadScript = redis.NewScript(lib + `
local t = clock()
local out = {}
for i = 1, #KEYS / 2 do
  state(out, load(KEYS[2 * i - 1]), live(KEYS[2 * i], t), t)
end
return out
`)

// renewScript is Store.Renew. KEYS: per reservation its record, then its
// lease keys. ARGV: TTL µs, then per reservation its id and how many lease
// keys follow its record. Reply: 1 per reservation still live, else 0.
var renewScript = redis.NewScript(lib + `
local t = clock()
local ttl = tonumber(ARGV[1])
local out, k = {}, 1
for j = 2, #ARGV, 2 do
  local rid, m = ARGV[j], tonumber(ARGV[j + 1])
  local alive = redis.call('EXISTS', KEYS[k]) == 1
  if alive then
    redis.call('PEXPIRE', KEYS[k], fmt(math.ceil(ttl / 1000)))
    for i = 1, m do
      redis.call('ZADD', KEYS[k + i], 'XX', fmt(t + ttl), rid)
      bumplease(KEYS[k + i], t)
    end
  end
  out[#out + 1] = alive and 1 or 0
  k = k + 1 + m
end
return out
`)
