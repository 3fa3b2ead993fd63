package openairelay

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// Every piece of state that outlives a request is listed here, with its
// lifetime and the pair that loads and releases it. Caddy loads a new config
// before it cleans up the old one, so state kept in a usage pool survives a
// reload (the new config loads the entry, the old one's Cleanup releases
// it); two sites that use the same key share its entry. Where the state is
// saved across restarts, persist.go says so.
//
//	State          What                                   Lifetime            Load / release
//	keyStates      health of each upstream key: retired   while a config      Provision (provisionKeys) /
//	               and why, probes, learning, counters    uses the key        Cleanup (Delete)
//	limiters       limiters of keys, limit groups and     while a config      limiters.load /
//	               clients: RPM/TPM buckets (with         uses the limiter    limiters.release
//	               learned limits and cool-downs), RPD/TPD
//	               counters, requests in flight
//	clientStates   each client's counters, spend and      while a config      provisionClients /
//	               budget reservations                    uses the client     Cleanup (Delete)
//	objectOwners   which key and client created each      process             remember / forget (objects.go)
//	               stored object (bounded rings)
//	cacheStores    cache stores, their flights and        while a config      CacheConfig.provision /
//	               semantic indexes                       uses the store      CacheConfig.cleanup
//	queues         the wait queues of loaded configs      config, then until  Provision (add) /
//	                                                      its last waiter     Cleanup (remove)
//	capacityGen    releases of capacity, for tier hints   process             capacityReleased
//	persisted      the restart snapshot and its writer    process             loadSnapshot, startSnapshots /
//	               (one goroutine per process)                                stopSnapshots (persist.go)
//	clientAuthGuard failed client logins by address       process             authguard.go
//	modelLabels    the metric's model label values        process             addModelLabels (metrics.go)
//	codecs         tokenizer codecs, by encoding          process             codecFor (estimate.go)
//
// The request path reaches this state through one seam, the Relay's
// stateStore (rl.state): limiters through a hold (hold.go: reserve, sent,
// settle, cancel), key health, client spend and object ownership through
// the store's methods; the cache through the cache.Store and cache.Group of
// its config. These are the operations a store shared by several instances
// has to provide; memoryState is the one that keeps them in this process.
var (
	keyStates     = caddy.NewUsagePool()
	limiterStates = caddy.NewUsagePool() // memoryLimiters' pool
	clientStates  = caddy.NewUsagePool()
	cacheStores   = caddy.NewUsagePool()
	objectOwners  = newObjectTable(maxObjects)
	queues        = &queueSet{qs: make(map[*limit.Queue]bool)}
	capacityGen   atomic.Uint64
)

// stateStore is the one seam between the request path and the state that
// outlives a request, shaped for a store shared by several instances: each
// operation is one atomic step there (take capacity, give it back, retire a
// key, claim a probe, reserve spend), and what selection reads stays local
// (the limiters and key states are the mirror such a store refreshes).
type stateStore interface {
	limiterStore
	healthStore
	spendStore
	// objects is the store of object ownership.
	objects() objectStore
}

// memoryState keeps all state in this process: the default, and what
// every test without a shared store runs on.
type memoryState struct {
	memoryLimiters
	memoryHealth
	memorySpend
}

func (memoryState) objects() objectStore { return objectOwners }

// inMemory is the state store of every config without a shared one.
var inMemory stateStore = memoryState{}

// limiterStore holds the limiters of keys, limit groups and clients, and is
// the one way capacity is taken on them and given back (hold.go calls it).
// The *limit.Limiter it hands out is what selection reads (headroom, room
// now, cool-downs); a store shared by several instances keeps it as the
// local mirror of the shared state, refreshed by its reserve and settle.
type limiterStore interface {
	// load returns the limiter named id with limits lim: created, or the
	// existing one updated in place (a reload keeps what is consumed).
	load(id string, lim Limits) *limit.Limiter
	// release drops a config's use of the limiter named id.
	release(id string)
	// reserve takes one request and tokens on a key's limiter and a
	// client's (nil: none) at once, or nothing.
	reserve(now time.Time, tokens int64, key, client *limit.Limiter) (reservation, bool)
	// reserveTokens is reserve of tokens alone, with no request and no
	// concurrency slot: an answer within a session that holds those.
	reserveTokens(now time.Time, tokens int64, key, client *limit.Limiter) (reservation, bool)
	// sent, settle and cancel are a reservation's later life: the request
	// left for the upstream; it was handled and used tokens; it was not.
	sent(r *reservation, now time.Time)
	settle(r *reservation, now time.Time, tokens int64)
	cancel(r *reservation, now time.Time)
	// learn applies what an answer's x-ratelimit-* headers say of the
	// limiter's upstream bucket as of asOf (limit.Limiter.LearnAsOf), and
	// exhausted a 429 (limit.Limiter.Exhausted): both only ever lower what
	// the limiter admits, so a shared store can apply them as floors.
	learn(l *limit.Limiter, asOf, now time.Time, h http.Header)
	exhausted(l *limit.Limiter, until time.Time, tokens int64)
	// lift ends the limiter's cool-down (a key restored by hand).
	lift(l *limit.Limiter)
	// unavailable reports whether requests are to be refused because the
	// store cannot be reached (on_error reject).
	unavailable() bool
}

// reservation is what one reserve took: on limiters of this process
// (local), or in a shared store (shared, with local unused).
type reservation struct {
	local  limit.Multi
	shared *sharedReservation
}

// memoryLimiters keeps the limiters in this process, in limiterStates.
type memoryLimiters struct{}

func (memoryLimiters) load(id string, lim Limits) *limit.Limiter {
	v, loaded := limiterStates.LoadOrStore(id, sharedLimiter{limit.NewLimiter(lim.core())})
	l := v.(sharedLimiter).Limiter
	if loaded {
		l.SetLimits(lim.core())
	} else {
		restoreCounters(id, l)
	}
	return l
}

func (memoryLimiters) release(id string) { _, _ = limiterStates.Delete(id) }

func (memoryLimiters) reserve(now time.Time, tokens int64, key, client *limit.Limiter) (reservation, bool) {
	m, _, ok := limit.ReserveAll(now, tokens, key, client)
	return reservation{local: m}, ok
}

func (memoryLimiters) reserveTokens(now time.Time, tokens int64, key, client *limit.Limiter) (reservation, bool) {
	m, _, ok := limit.ReserveAllTokens(now, tokens, key, client)
	return reservation{local: m}, ok
}

func (memoryLimiters) sent(r *reservation, now time.Time) { r.local.Retime(now) }
func (memoryLimiters) settle(r *reservation, now time.Time, tokens int64) {
	r.local.Settle(now, tokens)
}
func (memoryLimiters) cancel(r *reservation, now time.Time) { r.local.Cancel(now) }

func (memoryLimiters) learn(l *limit.Limiter, asOf, now time.Time, h http.Header) {
	l.LearnAsOf(asOf, now, h)
}

func (memoryLimiters) exhausted(l *limit.Limiter, until time.Time, tokens int64) {
	l.Exhausted(until, tokens)
}

func (memoryLimiters) lift(l *limit.Limiter) { l.CoolDown(time.Time{}) }

func (memoryLimiters) unavailable() bool { return false }

// healthStore keeps the health of keys: whether each is retired and why,
// and its probes. The keyState is what the request path reads (retired);
// a shared store keeps it as the mirror of the shared health, and claims a
// probe so that one instance probes a retired key and all see the result.
type healthStore interface {
	// retire takes the key out of rotation for reason until a probe
	// restores it; the first probe comes after firstProbe. It reports
	// whether the key was in rotation until then (as this instance saw it).
	retire(ks *keyState, reason string, now time.Time, firstProbe time.Duration) bool
	// retireManually retires the key until restoreManually (the admin
	// API); each reports whether it changed the key's state.
	retireManually(ks *keyState, now time.Time) bool
	restoreManually(ks *keyState) bool
	// probeDue reports whether the key is to be probed now, by this caller
	// alone; probed records the probe's result, and reports whether it
	// restored the key.
	probeDue(ks *keyState, now time.Time) bool
	probed(ks *keyState, ok bool, now time.Time) bool
	// track and untrack are a config's use of the key named poolID, whose
	// health a shared store mirrors into ks.
	track(poolID string, ks *keyState)
	untrack(poolID string)
}

// memoryHealth keeps key health in the keyStates.
type memoryHealth struct{}

func (memoryHealth) retire(ks *keyState, reason string, now time.Time, firstProbe time.Duration) bool {
	return ks.retire(reason, now, firstProbe)
}
func (memoryHealth) retireManually(ks *keyState, now time.Time) bool { return ks.retireManually(now) }
func (memoryHealth) restoreManually(ks *keyState) bool               { return ks.restoreManually() }
func (memoryHealth) probeDue(ks *keyState, now time.Time) bool       { return ks.probeDue(now) }
func (memoryHealth) probed(ks *keyState, ok bool, now time.Time) bool {
	return ks.probed(ok, now)
}
func (memoryHealth) track(string, *keyState) {}
func (memoryHealth) untrack(string)          {}

// spendStore keeps what clients spent and what requests in flight have
// reserved of their budgets (spend.go calls it).
type spendStore interface {
	// reserveSpend admits a request estimated at usd against the client's
	// budget for period while spent and reserved are under it; the
	// spendHold names the reservation for releaseSpend.
	reserveSpend(cs *clientState, now time.Time, period string, budget, usd float64) (spendHold, bool)
	// releaseSpend gives back what reserveSpend took.
	releaseSpend(cs *clientState, h spendHold, usd float64)
	// addSpend adds usd to the client's spend in the periods now falls in.
	addSpend(cs *clientState, now time.Time, usd float64)
}

// spendHold names a budget reservation in a shared store ("" in memory).
type spendHold string

// memorySpend keeps spend in the clientStates.
type memorySpend struct{}

func (memorySpend) reserveSpend(cs *clientState, now time.Time, period string, budget, usd float64) (spendHold, bool) {
	return "", cs.reserveSpend(now, period, budget, usd)
}
func (memorySpend) releaseSpend(cs *clientState, _ spendHold, usd float64) { cs.releaseSpend(usd) }
func (memorySpend) addSpend(cs *clientState, now time.Time, usd float64)   { cs.addSpend(now, usd) }

// objectStore records which key and which client created each stored
// object (objects.go), and is saved in the restart snapshot.
type objectStore interface {
	remember(id, key, owner string, created time.Time)
	setModels(id string, models []string)
	forget(id string)
	get(id string) (objectRecord, bool)
	len() int
	snapshot() *objectsSnapshot
	restore(s *objectsSnapshot)
}

// capacityReleased records a release of capacity anywhere (a reservation
// settled or cancelled, a key restored, a cool-down lifted), which
// invalidates the tiers' hints, and wakes the queues.
func capacityReleased() {
	capacityGen.Add(1)
	queues.notify()
}

// Interface guards: the in-memory stores, and the values of the usage pools.
var (
	_ stateStore       = memoryState{}
	_ objectStore      = (*objectTable)(nil)
	_ caddy.Destructor = (*keyState)(nil)
	_ caddy.Destructor = (*clientState)(nil)
	_ caddy.Destructor = sharedLimiter{}
	_ caddy.Destructor = (*sharedStore)(nil)
)
