package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store in Redis, shared by every relay instance that uses the same Redis
// and prefix: an answer stored by one instance is a hit on all of them. It also lets
// the instances coalesce identical requests in flight across processes (Claim, Wait,
// Release). It is safe for concurrent use.
//
// # Keys
//
// Every key starts with the hash tag {prefix}, so that all of a store's keys live in
// one Redis Cluster slot and one Lua script may touch several of them:
//
//	{prefix}:c:<hex key>    string: the entry, as Entry.MarshalBinary encodes it,
//	                        expiring with its TTL (PX)
//	{prefix}:cidx           sorted set: every entry's hex key, scored by its last
//	                        use (Set or Get hit) in Unix microseconds of Redis's
//	                        clock, so that the lowest score is the least recently used
//	{prefix}:csize          hash: every entry's hex key to its Entry.Size
//	{prefix}:cbytes         string: the sum of csize, compared with maxBytes
//	{prefix}:cexp           sorted set: the hex keys of entries with a TTL, scored by
//	                        their expiry in Unix microseconds of Redis's clock
//	{prefix}:cfl:<hex key>  string: the flight marker of a request in flight
//	{prefix}:cdone          pub/sub channel: the hex key of a flight that ended
//
// # Semantics
//
// Each operation is one Lua script, so the bookkeeping is atomic and the byte bound is
// global across instances: Set evicts the least recently used entries until the new
// one fits in maxBytes. Time is Redis's (TIME), so instances with skewed clocks agree.
// An entry whose TTL passed is taken out of the bookkeeping (and counted as Expired)
// when a script meets it: a Get of its key, Set's eviction, or the sweep that Set and
// Stats run over cexp (at most 64 entries per call, so a call stays short). An entry
// that Redis itself evicted under maxmemory is handled the same way and counts as
// expired.
//
// A Redis error or timeout is a miss for Get and a no-op for Set, Delete and Purge; it
// is counted by Errors. The client should be built with ContextTimeoutEnabled, so that
// a call never outlives its context (go-redis otherwise bounds it by its read and
// write timeouts only).
type Redis struct {
	c        redis.UniversalClient
	tag      string // "{prefix}"
	idx      string
	sizes    string
	bytes    string
	exps     string
	channel  string
	maxBytes int64
	maxEntry int64
	timeout  time.Duration

	// Changed by tests only, before use.
	poll       time.Duration // how often Wait checks the marker and entry
	statsAge   time.Duration // how long Stats reuses Entries and Bytes read from Redis
	purgeBatch int           // entries removed per Purge round trip

	hits, misses, evictions, expired, errs atomic.Uint64

	statsMu sync.Mutex
	statsAt time.Time
	entries int64
	held    int64

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // by hex key

	subMu   sync.Mutex
	ps      *redis.PubSub // nil until the first Wait that waits, and after Close
	subDone chan struct{} // closed when the dispatching goroutine returns
	subs    atomic.Int64  // subscriptions started, for tests
	closed  bool
}

// Defaults of the fields tests change.
const (
	redisPoll       = 250 * time.Millisecond
	redisStatsAge   = time.Second
	redisPurgeBatch = 1000
)

// NewRedis returns a store in Redis under keys that start with the hash tag {prefix},
// holding at most maxBytes (as counted by Entry.Size) across every instance that shares
// the prefix, in which no entry larger than maxEntry is stored. maxEntry <= 0 means
// maxBytes. timeout bounds each call to Redis (a context's deadline is also honoured);
// timeout <= 0 leaves only the context's.
func NewRedis(c redis.UniversalClient, prefix string, maxBytes, maxEntry int64, timeout time.Duration) *Redis {
	maxBytes = max(maxBytes, 0)
	if maxEntry <= 0 || maxEntry > maxBytes {
		maxEntry = maxBytes
	}
	tag := "{" + prefix + "}"
	return &Redis{
		c:          c,
		tag:        tag,
		idx:        tag + ":cidx",
		sizes:      tag + ":csize",
		bytes:      tag + ":cbytes",
		exps:       tag + ":cexp",
		channel:    tag + ":cdone",
		maxBytes:   maxBytes,
		maxEntry:   maxEntry,
		timeout:    timeout,
		poll:       redisPoll,
		statsAge:   redisStatsAge,
		purgeBatch: redisPurgeBatch,
		waiters:    make(map[string]map[chan struct{}]struct{}),
	}
}

func (r *Redis) dataPrefix() string        { return r.tag + ":c:" }
func (r *Redis) dataKey(m string) string   { return r.tag + ":c:" + m }
func (r *Redis) flightKey(m string) string { return r.tag + ":cfl:" + m }

// keys returns the KEYS of the entry scripts: the bookkeeping, then the entry's data
// and flight marker.
func (r *Redis) keys(m string) []string {
	return []string{r.idx, r.sizes, r.bytes, r.exps, r.dataKey(m), r.flightKey(m)}
}

// bookKeys returns the KEYS of the scripts that touch the bookkeeping only.
func (r *Redis) bookKeys() []string { return []string{r.idx, r.sizes, r.bytes, r.exps} }

// redisMember is the name of k in the bookkeeping, the channel and the keys.
func redisMember(k Key) string { return hex.EncodeToString(k[:]) }

// call returns ctx bounded by the store's timeout.
func (r *Redis) call(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, r.timeout)
}

// Errors returns how many calls to Redis failed (errors and timeouts) on this instance.
func (r *Redis) Errors() uint64 { return r.errs.Load() }

// Get returns the live entry for k and marks it most recently used, in one round
// trip. A Redis error, and an entry that does not decode (which is then deleted), are
// misses.
func (r *Redis) Get(ctx context.Context, k Key) (*Entry, bool) {
	m := redisMember(k)
	ctx, cancel := r.call(ctx)
	defer cancel()
	v, err := redisGet.Run(ctx, r.c, r.keys(m), r.dataPrefix(), m).Result()
	if err != nil {
		r.errs.Add(1)
		r.misses.Add(1)
		return nil, false
	}
	s, ok := v.(string)
	if !ok {
		if n, _ := v.(int64); n == 1 {
			r.expired.Add(1)
		}
		r.misses.Add(1)
		return nil, false
	}
	e := new(Entry)
	if err := e.UnmarshalBinary([]byte(s)); err != nil {
		r.misses.Add(1)
		r.drop(ctx, m, false)
		return nil, false
	}
	r.hits.Add(1)
	return e, true
}

// Set stores e under k for ttl (ttl <= 0: until evicted), evicting the least recently
// used entries of every instance as needed, and ends k's flight: the marker is cleared
// and the waiters are notified. An entry larger than maxEntry is not stored, and the
// older entry for k is removed, since it is no longer the latest answer. A zero
// e.Stored is taken as now, on a copy of e.
func (r *Redis) Set(ctx context.Context, k Key, e *Entry, ttl time.Duration) {
	if e.Stored.IsZero() {
		c := *e
		c.Stored = time.Now()
		e = &c
	}
	m := redisMember(k)
	ctx, cancel := r.call(ctx)
	defer cancel()
	size := e.Size()
	if size > r.maxEntry {
		r.drop(ctx, m, true)
		return
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return
	}
	var ttlMs int64
	if ttl > 0 {
		// Rounded up, so that a sub-millisecond TTL is not "no expiry".
		ttlMs = int64((ttl + time.Millisecond - 1) / time.Millisecond)
	}
	v, err := redisSet.Run(ctx, r.c, r.keys(m), r.dataPrefix(), m, b, size, ttlMs, r.maxBytes, r.channel).Int64Slice()
	if err != nil || len(v) != 2 {
		r.errs.Add(1)
		return
	}
	r.evictions.Add(uint64(v[0]))
	r.expired.Add(uint64(v[1]))
}

// Delete removes the entry for k, if any. It leaves k's flight alone.
func (r *Redis) Delete(ctx context.Context, k Key) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	r.drop(ctx, redisMember(k), false)
}

// drop removes the entry m and, with release, ends its flight.
func (r *Redis) drop(ctx context.Context, m string, release bool) {
	rel := "0"
	if release {
		rel = "1"
	}
	if err := redisDelete.Run(ctx, r.c, r.keys(m), r.dataPrefix(), m, rel, r.channel).Err(); err != nil {
		r.errs.Add(1)
	}
}

// Purge removes every entry of this store's prefix, those of other prefixes staying.
// It goes through the index in batches, each one round trip bounded by the timeout,
// so that Redis is never blocked long; entries stored meanwhile may survive. Flight
// markers are left alone. Counters other than Entries and Bytes are kept.
func (r *Redis) Purge(ctx context.Context) {
	for {
		cctx, cancel := r.call(ctx)
		n, err := redisPurge.Run(cctx, r.c, r.bookKeys(), r.dataPrefix(), r.purgeBatch).Int64()
		cancel()
		if err != nil {
			r.errs.Add(1)
			return
		}
		if n < int64(r.purgeBatch) {
			break
		}
	}
	r.statsMu.Lock()
	r.statsAt = time.Time{}
	r.statsMu.Unlock()
}

// Stats returns Entries and Bytes as held in Redis by every instance, read at most
// once a second (and kept from the last good read when Redis fails), and Hits,
// Misses, Evictions and Expired as seen by this instance.
func (r *Redis) Stats() Stats {
	r.statsMu.Lock()
	stale := time.Since(r.statsAt) >= r.statsAge
	r.statsMu.Unlock()
	if stale {
		r.readStats()
	}
	r.statsMu.Lock()
	st := Stats{Entries: r.entries, Bytes: r.held}
	r.statsMu.Unlock()
	st.Hits = r.hits.Load()
	st.Misses = r.misses.Load()
	st.Evictions = r.evictions.Load()
	st.Expired = r.expired.Load()
	return st
}

// readStats reads Entries and Bytes from Redis, sweeping expired entries first so that
// they do not count.
func (r *Redis) readStats() {
	ctx, cancel := r.call(context.Background())
	defer cancel()
	v, err := redisStats.Run(ctx, r.c, r.bookKeys(), r.dataPrefix()).Int64Slice()
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	// A failed read counts as one too, so that a Redis that is down is not asked on
	// every call.
	r.statsAt = time.Now()
	if err != nil || len(v) != 3 {
		r.errs.Add(1)
		return
	}
	r.entries, r.held = v[0], v[1]
	r.expired.Add(uint64(v[2]))
}

var errClaimTTL = errors.New("cache: a flight claim needs a positive TTL")

// Claim marks a request for k as in flight for at most ttl, across instances. With
// leader true the caller sends the request and then calls Set, which ends the flight,
// or Release; otherwise another instance (or request) is already sending it, and the
// caller may Wait. The TTL bounds how long waiters wait for a leader that died; it
// must be positive. On a Redis error the caller is not the leader of a shared flight
// and should go upstream on its own.
func (r *Redis) Claim(ctx context.Context, k Key, ttl time.Duration) (leader bool, err error) {
	if ttl <= 0 {
		return false, errClaimTTL
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	leader, err = r.c.SetNX(ctx, r.flightKey(redisMember(k)), "1", ttl).Result()
	if err != nil {
		r.errs.Add(1)
		return false, fmt.Errorf("cache: claiming a flight: %w", err)
	}
	return leader, nil
}

// Release ends k's flight without an entry, because the leader failed or its answer
// is not storable: the marker is cleared and the waiters wake up, to go upstream
// themselves.
func (r *Redis) Release(ctx context.Context, k Key) {
	m := redisMember(k)
	ctx, cancel := r.call(ctx)
	defer cancel()
	if err := redisRelease.Run(ctx, r.c, []string{r.flightKey(m)}, r.channel, m).Err(); err != nil {
		r.errs.Add(1)
	}
}

// Wait waits for k's flight to end. It returns the entry once stored, and false when
// the flight ends without one (the marker was released or expired), when there is no
// flight, when ctx ends, or on a Redis error. Waiters of one instance share one
// pub/sub subscription, started by the first that waits; each also checks the marker
// and the entry every 250ms, so that a lost notification delays a waiter but never
// holds it past the marker's TTL. Wait does not count in Stats.
func (r *Redis) Wait(ctx context.Context, k Key) (*Entry, bool) {
	m := redisMember(k)
	e, flying, err := r.peek(ctx, m)
	if err != nil || !flying {
		return e, e != nil
	}
	ch := r.addWaiter(m)
	defer r.removeWaiter(m, ch)
	r.subscribe(ctx)
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		// The first check, once subscribed, catches a Set that came before the
		// subscription.
		e, flying, err := r.peek(ctx, m)
		if err != nil || !flying {
			return e, e != nil
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-ch:
		case <-t.C:
		}
	}
}

// peek reads the entry m and whether its flight marker is there, in one round trip.
// flying is false once there is an entry.
func (r *Redis) peek(ctx context.Context, m string) (e *Entry, flying bool, err error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	v, err := r.c.MGet(ctx, r.dataKey(m), r.flightKey(m)).Result()
	if err == nil && len(v) != 2 {
		err = errBadReply
	}
	if err != nil {
		r.errs.Add(1)
		return nil, false, err
	}
	if s, ok := v[0].(string); ok {
		e = new(Entry)
		if err := e.UnmarshalBinary([]byte(s)); err == nil {
			return e, false, nil
		}
		r.drop(ctx, m, false)
	}
	return nil, v[1] != nil, nil
}

var errBadReply = errors.New("cache: unexpected reply from Redis")

func (r *Redis) addWaiter(m string) chan struct{} {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.waiters[m]
	if ws == nil {
		ws = make(map[chan struct{}]struct{})
		r.waiters[m] = ws
	}
	ws[ch] = struct{}{}
	return ch
}

func (r *Redis) removeWaiter(m string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.waiters[m]
	delete(ws, ch)
	if len(ws) == 0 {
		delete(r.waiters, m)
	}
}

// waiting returns how many Waits are registered, for tests.
func (r *Redis) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ws := range r.waiters {
		n += len(ws)
	}
	return n
}

// subscribe starts the store's subscription to the done channel unless it runs, and
// waits until Redis confirms it, so that the caller's next check happens while
// notifications arrive. When it cannot start, waiters fall back on polling and the
// next Wait tries again. go-redis reconnects and resubscribes a running subscription
// after a connection loss.
func (r *Redis) subscribe(ctx context.Context) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	if r.ps != nil || r.closed {
		return
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	ps := r.c.Subscribe(ctx, r.channel)
	// ReceiveTimeout rather than Receive: without ContextTimeoutEnabled the context's
	// deadline would not bound the read.
	if _, err := ps.ReceiveTimeout(ctx, r.timeout); err != nil {
		r.errs.Add(1)
		_ = ps.Close()
		return
	}
	done := make(chan struct{})
	r.ps, r.subDone = ps, done
	r.subs.Add(1)
	go r.dispatch(ps.Channel(), done)
}

// dispatch wakes the waiters of each key announced on the done channel, until the
// subscription is closed.
func (r *Redis) dispatch(msgs <-chan *redis.Message, done chan struct{}) {
	defer close(done)
	for msg := range msgs {
		r.mu.Lock()
		for ch := range r.waiters[msg.Payload] {
			select {
			case ch <- struct{}{}:
			default: // already woken, not yet checked
			}
		}
		r.mu.Unlock()
	}
}

// Close stops the subscription and its goroutine; waiters still running fall back on
// polling. It does not close the client.
func (r *Redis) Close() error {
	r.subMu.Lock()
	r.closed = true
	ps, done := r.ps, r.subDone
	r.ps = nil
	r.subMu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}

var _ Store = (*Redis)(nil)

// redisLib is the part common to the entry scripts. KEYS[1..4] are the index, the
// sizes, the byte counter and the expiry index; ARGV[1] is the prefix of data keys,
// which scripts complete with a member's hex key (in the same slot, by the hash tag).
// Times are Unix microseconds of Redis's clock, exact in Lua's doubles.
const redisLib = `
local idx, sizes, bytes, exps = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dp = ARGV[1]

local function fmt(x) return string.format('%.0f', x) end

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- forget takes m out of the bookkeeping and returns its size, or false when it was
-- not there. The data key is the caller's business.
local function forget(m)
  redis.call('ZREM', idx, m)
  redis.call('ZREM', exps, m)
  local s = redis.call('HGET', sizes, m)
  if not s then return false end
  redis.call('HDEL', sizes, m)
  redis.call('DECRBY', bytes, s)
  return tonumber(s)
end

-- sweep removes up to 64 entries whose TTL passed, and returns how many.
local function sweep(now)
  local due = redis.call('ZRANGEBYSCORE', exps, '-inf', fmt(now), 'LIMIT', 0, 64)
  for _, m in ipairs(due) do
    forget(m)
    redis.call('DEL', dp .. m)
  end
  return #due
end
`

// redisGet returns the entry (KEYS[5]) and marks it used; without one, 1 if the entry
// had expired (and was taken out of the bookkeeping), else 0. ARGV[2] is the member.
var redisGet = redis.NewScript(redisLib + `
local v = redis.call('GET', KEYS[5])
if v then
  redis.call('ZADD', idx, 'XX', fmt(clock()), ARGV[2])
  return v
end
if forget(ARGV[2]) then return 1 end
return 0
`)

// redisSet stores ARGV[3] of size ARGV[4] at KEYS[5] for ARGV[5] ms (0: no expiry)
// under the byte bound ARGV[6], evicting the least recently used entries, then clears
// the flight marker KEYS[6] and, if it was there, publishes the member on channel
// ARGV[7]. It replies {evicted, expired}. When the index is empty the bookkeeping is
// reset, so that a counter that drifted (keys removed behind the scripts' back) heals.
var redisSet = redis.NewScript(redisLib + `
local m, size, ttl, maxb = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = clock()
local expired = sweep(now)
local evicted = 0
forget(m)
local total = tonumber(redis.call('GET', bytes) or 0)
while total + size > maxb do
  local oldest = redis.call('ZRANGE', idx, 0, 0)
  if #oldest == 0 then
    redis.call('DEL', sizes, exps)
    total = 0
    break
  end
  local o = oldest[1]
  total = total - (forget(o) or 0)
  if redis.call('DEL', dp .. o) == 1 then
    evicted = evicted + 1
  else
    expired = expired + 1
  end
end
if ttl > 0 then
  redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[5])
  redis.call('ZADD', exps, fmt(now + ttl * 1000), m)
else
  redis.call('SET', KEYS[5], ARGV[3])
end
redis.call('ZADD', idx, fmt(now), m)
redis.call('HSET', sizes, m, ARGV[4])
redis.call('SET', bytes, fmt(total + size))
if redis.call('DEL', KEYS[6]) == 1 then
  redis.call('PUBLISH', ARGV[7], m)
end
return {evicted, expired}
`)

// redisDelete removes the entry ARGV[2] and, when ARGV[3] is '1', ends its flight as
// redisRelease does.
var redisDelete = redis.NewScript(redisLib + `
forget(ARGV[2])
redis.call('DEL', KEYS[5])
if ARGV[3] == '1' and redis.call('DEL', KEYS[6]) == 1 then
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
return 0
`)

// redisPurge removes up to ARGV[2] entries, the least recently used first, and replies
// how many. Once the index is empty the bookkeeping is deleted with it.
var redisPurge = redis.NewScript(redisLib + `
local ms = redis.call('ZRANGE', idx, 0, tonumber(ARGV[2]) - 1)
for _, m in ipairs(ms) do
  forget(m)
  redis.call('DEL', dp .. m)
end
if redis.call('ZCARD', idx) == 0 then
  redis.call('DEL', idx, sizes, bytes, exps)
end
return #ms
`)

// redisStats sweeps expired entries and replies {entries, bytes, expired}.
var redisStats = redis.NewScript(redisLib + `
local expired = sweep(clock())
return {redis.call('ZCARD', idx), tonumber(redis.call('GET', bytes) or 0), expired}
`)

// redisRelease clears the flight marker KEYS[1] and, if it was there, publishes the
// member ARGV[2] on channel ARGV[1].
var redisRelease = redis.NewScript(`
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return 0
`)
