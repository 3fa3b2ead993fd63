package openairelay

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// keyState is the shared, mutable state of one upstream key. Its rate limits
// live in its limiter (or its limit group's); what is kept here is whether
// the key is retired, and counters for the admin API.
type keyState struct {
	mu sync.Mutex
	// Set by every config that loads the key (the latest wins).
	id       string
	poolID   string
	upstream string
	group    string
	limiter  *limit.Limiter // the key's own, or its limit group's
	store    stateStore     // where the key's health and limits are kept
	events   *relayEvents   // what announces changes of its health (nil: nothing)

	tier, upstreamWeight, weight int

	retiredReason string
	retiredAt     time.Time
	nextProbe     time.Time
	probeBackoff  time.Duration
	probing       bool
	manual        bool // retired through the admin API: not probed

	// answered is set once the key has had an answer from its upstream.
	// Until then a key without configured limits takes one request at a
	// time (learning holds the slot), so that a burst cannot overrun limits
	// the relay has not learned yet.
	answered atomic.Bool
	learning atomic.Bool
	// confirming is set while a probe checks whether an ambiguous 401 or
	// 403 was about the key (see Relay.confirmKey).
	confirming atomic.Bool

	requests    atomic.Int64
	failures    atomic.Int64
	rateLimited atomic.Int64 // 429s the upstream answered with this key
	minute      minuteCounts
	latencyNS   atomic.Int64 // moving average of the time to response header
	tokensIn    atomic.Int64
	tokensOut   atomic.Int64
	sessions    atomic.Int64 // WebSocket sessions open on the key
}

// keyInfo is what describes a key: its names, limiter and state store.
type keyInfo struct {
	id, poolID, upstream, group string
	limiter                     *limit.Limiter
	// tier is the upstream's priority; upstreamWeight and weight are the
	// upstream's among its tier and the key's among its upstream's keys.
	tier, upstreamWeight, weight int
	store                        stateStore
	events                       *relayEvents
}

// describe records what a config gives the key.
func (ks *keyState) describe(info keyInfo) {
	ks.mu.Lock()
	ks.id, ks.poolID, ks.upstream, ks.group, ks.limiter, ks.store, ks.events = info.id, info.poolID, info.upstream, info.group, info.limiter, info.store, info.events
	ks.tier, ks.upstreamWeight, ks.weight = info.tier, info.upstreamWeight, info.weight
	ks.mu.Unlock()
}

func (ks *keyState) info() keyInfo {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return keyInfo{tier: ks.tier, upstreamWeight: ks.upstreamWeight, weight: ks.weight, id: ks.id, poolID: ks.poolID, upstream: ks.upstream, group: ks.group, limiter: ks.limiter, store: ks.store, events: ks.events}
}

// Destruct implements caddy.Destructor; a key's state holds no resources.
func (*keyState) Destruct() error { return nil }

// retired reports whether the key is out of rotation.
func (ks *keyState) retired() bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.retiredReason != ""
}

// Probe backoff: the first probe of a retired key comes after the relay's
// probe_backoff, each failed probe doubles the wait up to maxProbeDelay. A
// key retired again soon after a restore keeps its longer backoff, so a key
// that passes the probe but fails real requests is not hammered.
const maxProbeDelay = time.Hour

// retire takes the key out of rotation until a probe or the admin API
// restores it; the first probe comes after firstProbe. It reports whether
// the key was in rotation until now.
func (ks *keyState) retire(reason string, now time.Time, firstProbe time.Duration) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	newly := ks.retiredReason == ""
	if newly {
		ks.retiredAt = now
		if ks.probeBackoff == 0 {
			ks.probeBackoff = firstProbe
		}
		ks.nextProbe = now.Add(ks.probeBackoff)
	}
	ks.retiredReason = reason
	return newly
}

// manualReason is the reason of a key retired through the admin API.
const manualReason = "retired through the admin API"

// retireManually retires the key until the admin API restores it, and
// reports whether it was in rotation until now.
func (ks *keyState) retireManually(now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	newly := ks.retiredReason == ""
	if newly {
		ks.retiredAt = now
	}
	ks.retiredReason = manualReason
	ks.manual = true
	return newly
}

// restoreManually brings the key back and forgets its probe backoff (the
// admin API lifts its limiter's cool-down through the store). It reports
// whether the key was retired.
func (ks *keyState) restoreManually() bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	was := ks.retiredReason != ""
	ks.retiredReason = ""
	ks.retiredAt = time.Time{}
	ks.probeBackoff = 0
	ks.manual = false
	return was
}

// probeDue reports whether a retired key should be probed at now, and marks
// it as being probed so that only one prober does it.
func (ks *keyState) probeDue(now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.retiredReason == "" || ks.manual || ks.probing || now.Before(ks.nextProbe) {
		return false
	}
	ks.probing = true
	return true
}

// probed records a probe's result, and reports whether it restored the
// key.
func (ks *keyState) probed(ok bool, now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.probing = false
	if ok {
		was := ks.retiredReason != ""
		ks.retiredReason = ""
		ks.retiredAt = time.Time{}
		return was
	}
	ks.probeBackoff = min(ks.probeBackoff*2, maxProbeDelay)
	ks.nextProbe = now.Add(ks.probeBackoff)
	return false
}

// observeLatency folds one time-to-header into the moving average.
func (ks *keyState) observeLatency(d time.Duration) {
	for {
		old := ks.latencyNS.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if ks.latencyNS.CompareAndSwap(old, next) {
			return
		}
	}
}

// poolKey is one upstream key as one config uses it.
type poolKey struct {
	id       string
	secret   string
	upstream *Upstream
	weight   int // the key's weight among its upstream's keys
	state    *keyState
	poolID   string

	limiter   *limit.Limiter // the key's own, or its limit group's
	limiterID string         // its name in the limiter store
	// unconfigured is set when no RPM or TPM is configured for the key: its
	// limits are to be learned from the upstream's headers.
	unconfigured bool
}

// keyPoolID names a key's shared state: the upstream URL and a hash of the
// secret, never the secret itself.
func keyPoolID(upstreamURL, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return upstreamURL + "#" + hex.EncodeToString(sum[:16])
}
