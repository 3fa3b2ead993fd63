package openairelay

import (
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
// The request path reaches the limiters only through a hold (hold.go:
// reserve, sent, settle, cancel) and the limiterStore below, key health through keyState's methods,
// spend through clientState's, object ownership through the objectStore and
// the cache through the cache.Store and cache.Group of its config: these
// are the operations a store shared by several instances has to provide.
var (
	keyStates                  = caddy.NewUsagePool()
	limiterStates              = caddy.NewUsagePool() // memoryLimiters' pool
	clientStates               = caddy.NewUsagePool()
	cacheStores                = caddy.NewUsagePool()
	objectOwners  objectStore  = newObjectTable(maxObjects)
	limiters      limiterStore = memoryLimiters{}
	queues                     = &queueSet{qs: make(map[*limit.Queue]bool)}
	capacityGen   atomic.Uint64
)

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
	reserve(now time.Time, tokens int64, key, client *limit.Limiter) (limit.Multi, bool)
	// sent, settle and cancel are a reservation's later life: the request
	// left for the upstream; it was handled and used tokens; it was not.
	sent(m *limit.Multi, now time.Time)
	settle(m *limit.Multi, now time.Time, tokens int64)
	cancel(m *limit.Multi, now time.Time)
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

func (memoryLimiters) reserve(now time.Time, tokens int64, key, client *limit.Limiter) (limit.Multi, bool) {
	m, _, ok := limit.ReserveAll(now, tokens, key, client)
	return m, ok
}

func (memoryLimiters) sent(m *limit.Multi, now time.Time)                 { m.Retime(now) }
func (memoryLimiters) settle(m *limit.Multi, now time.Time, tokens int64) { m.Settle(now, tokens) }
func (memoryLimiters) cancel(m *limit.Multi, now time.Time)               { m.Cancel(now) }

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
	_ limiterStore     = memoryLimiters{}
	_ objectStore      = (*objectTable)(nil)
	_ caddy.Destructor = (*keyState)(nil)
	_ caddy.Destructor = (*clientState)(nil)
	_ caddy.Destructor = sharedLimiter{}
	_ caddy.Destructor = (*sharedStore)(nil)
)
