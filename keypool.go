package openairelay

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// keyStates holds the state of every upstream key in use, keyed by the
// upstream's URL and a hash of the key. It is package-level so that the state
// of a key survives a config reload (the new config loads the same entry
// before the old config's Cleanup releases it) and so that two sites using
// the same key share one state.
var keyStates = caddy.NewUsagePool()

// keyState is the shared, mutable state of one upstream key.
type keyState struct {
	id string

	mu            sync.Mutex
	coolingUntil  time.Time
	retiredReason string
	retiredAt     time.Time

	inFlight atomic.Int64
	requests atomic.Int64
	failures atomic.Int64
}

// Destruct implements caddy.Destructor; a key's state holds no resources.
func (*keyState) Destruct() error { return nil }

// available reports whether the key may take a request at now.
func (ks *keyState) available(now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.retiredReason == "" && !now.Before(ks.coolingUntil)
}

// coolDown keeps the key out of rotation until t, or longer if it already is.
func (ks *keyState) coolDown(t time.Time) {
	ks.mu.Lock()
	if t.After(ks.coolingUntil) {
		ks.coolingUntil = t
	}
	ks.mu.Unlock()
}

// retire takes the key out of rotation until it is restored.
func (ks *keyState) retire(reason string, now time.Time) {
	ks.mu.Lock()
	if ks.retiredReason == "" {
		ks.retiredAt = now
	}
	ks.retiredReason = reason
	ks.mu.Unlock()
}

// restore brings a retired or cooling key back.
func (ks *keyState) restore() {
	ks.mu.Lock()
	ks.retiredReason = ""
	ks.retiredAt = time.Time{}
	ks.coolingUntil = time.Time{}
	ks.mu.Unlock()
}

// unavailableUntil is when a cooling key comes back; zero for a retired or
// available key.
func (ks *keyState) unavailableUntil() (until time.Time, retired bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.coolingUntil, ks.retiredReason != ""
}

// poolKey is one upstream key as one config uses it.
type poolKey struct {
	id       string
	secret   string
	upstream *Upstream
	weight   int // the key's weight among its upstream's keys
	state    *keyState
	poolID   string
}

// keyPoolID names a key's shared state: the upstream URL and a hash of the
// secret, never the secret itself.
func keyPoolID(upstreamURL, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return upstreamURL + "#" + hex.EncodeToString(sum[:16])
}
