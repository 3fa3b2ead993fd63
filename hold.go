package openairelay

import (
	"sync"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// hold is the capacity one attempt holds: its key, the reservations on the
// key's limiter and the client's, and, for a key whose limits are not
// known yet, the key's learning slot. It is taken by reserve and ends once,
// by settle when the upstream handled the request or by cancel when it did
// not; whatever happens, `defer h.cancel()` gives back what is still held.
type hold struct {
	key   *poolKey
	store limiterStore

	mu       sync.Mutex // the transport's send callback (sent) races the end
	res      reservation
	learning bool // the hold took the key's learning slot
	ended    bool
}

// reserve takes tokens on the key and on the client's limiter (nil: none)
// at once, or nothing.
func reserve(st limiterStore, now time.Time, k *poolKey, client *limit.Limiter, tokens int64) (*hold, bool) {
	if k.state.retired() {
		return nil, false
	}
	learning := false
	if !k.state.answered.Load() && k.unconfigured {
		// Nothing known of the key's limits yet: one request at a time
		// until an answer teaches them.
		if !k.state.learning.CompareAndSwap(false, true) {
			return nil, false
		}
		learning = true
	}
	m, ok := st.reserve(now, tokens, k.limiter, client)
	if !ok {
		if learning {
			k.state.learning.Store(false)
		}
		return nil, false
	}
	return &hold{key: k, store: st, res: m, learning: learning}, true
}

// reserveTokens takes tokens alone on the key and the client's limiter, for
// an answer within a session that holds the request and the concurrency
// slot (a WebSocket's hold): no learning slot either, as the session's own
// request took it and the upstream has answered since.
func reserveTokens(st limiterStore, now time.Time, k *poolKey, client *limit.Limiter, tokens int64) (*hold, bool) {
	if k.state.retired() {
		return nil, false
	}
	m, ok := st.reserveTokens(now, tokens, k.limiter, client)
	if !ok {
		return nil, false
	}
	return &hold{key: k, store: st, res: m}, true
}

// sent tells the limiters that the request has left for the upstream, which
// counts it from now on (see limit.Reservation.Retime).
func (h *hold) sent() {
	h.mu.Lock()
	if !h.ended {
		h.store.sent(&h.res, time.Now())
	}
	h.mu.Unlock()
}

// settle ends the hold for a request the upstream handled: the tokens it
// used replace the estimate (0 for a request that produced none).
func (h *hold) settle(tokens int64) { h.end(true, tokens) }

// cancel gives back whatever is still held, as for a request the upstream
// never handled. After settle it does nothing.
func (h *hold) cancel() { h.end(false, 0) }

func (h *hold) end(handled bool, tokens int64) {
	if h == nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	if h.ended {
		h.mu.Unlock()
		return
	}
	h.ended = true
	if handled {
		h.store.settle(&h.res, now, tokens)
	} else {
		h.store.cancel(&h.res, now)
	}
	h.res = reservation{}
	h.mu.Unlock()
	if h.learning {
		h.key.state.learning.Store(false)
	}
	capacityReleased()
}

// keep moves what h holds into a new hold, for capacity that outlives the
// attempt that took it (a WebSocket session's request and slot): h's
// deferred cancel then does nothing. The learning slot goes back now, as the
// upstream has answered.
func (h *hold) keep() *hold {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := &hold{key: h.key, store: h.store, res: h.res}
	h.res, h.ended = reservation{}, true
	if h.learning {
		h.learning = false
		h.key.state.learning.Store(false)
	}
	return kept
}
