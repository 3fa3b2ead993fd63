package openairelay

import (
	"sync/atomic"

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
//	limiterStates  limiters of keys, limit groups and     while a config      loadLimiter /
//	               clients: RPM/TPM buckets (with         uses the limiter    Cleanup (Delete)
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
// reserve, sent, settle, cancel), key health through keyState's methods,
// spend through clientState's, object ownership through objectOwners and
// the cache through the cache.Store and cache.Group of its config: these
// are the operations a store shared by several instances has to provide.
var (
	keyStates     = caddy.NewUsagePool()
	limiterStates = caddy.NewUsagePool()
	clientStates  = caddy.NewUsagePool()
	cacheStores   = caddy.NewUsagePool()
	objectOwners  = newObjectTable(maxObjects)
	queues        = &queueSet{qs: make(map[*limit.Queue]bool)}
	capacityGen   atomic.Uint64
)

// capacityReleased records a release of capacity anywhere (a reservation
// settled or cancelled, a key restored, a cool-down lifted), which
// invalidates the tiers' hints, and wakes the queues.
func capacityReleased() {
	capacityGen.Add(1)
	queues.notify()
}

// Interface guards: the values of the usage pools.
var (
	_ caddy.Destructor = (*keyState)(nil)
	_ caddy.Destructor = (*clientState)(nil)
	_ caddy.Destructor = sharedLimiter{}
	_ caddy.Destructor = (*sharedStore)(nil)
)
