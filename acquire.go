package openairelay

import (
	"errors"
	"sync"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// admit lets the request on to acquire, or refuses it: the client's budget
// must hold its estimated spend (reserved until releaseBudget, spend.go),
// and some key must be large enough for it (tooLarge).
func (pr *proxyRequest) admit() *apiError {
	if aerr := pr.reserveBudget(); aerr != nil {
		return aerr
	}
	if aerr := pr.tooLarge(); aerr != nil {
		pr.releaseBudget()
		return aerr
	}
	return nil
}

// acquire chooses the key for the next attempt and holds the request's
// estimated tokens on it and on the client. When no key has room, the
// request waits in the queue, by priority then arrival, until one has, or
// until max_wait: then it gets 429 with Retry-After. Both results are nil
// when the client left.
func (pr *proxyRequest) acquire() (*hold, *apiError) {
	if !pr.anyKeyLeft() {
		return nil, errNoKeys()
	}
	if pr.rl.state.unavailable() {
		return nil, errStateUnavailable()
	}
	// One client may hold only its share of the queue (and of the bodies
	// it buffers): past it, a request is served if a key has room at once,
	// and refused otherwise.
	st := pr.client.state
	if st.waiting.Add(1) > int64(pr.rl.queueShare) {
		st.waiting.Add(-1)
		now := time.Now()
		if h, _ := pr.tryAcquire(now); h != nil {
			return h, nil
		}
		if pr.rl.queue.Len() >= pr.rl.MaxQueue {
			// The client's share is the whole queue (a lone client), and
			// the queue is full.
			pr.rl.events.queueFull(pr.rl.MaxQueue, now)
		}
		return nil, errNoCapacity(time.Second, "this client already has its share of the relay's queue waiting.")
	}
	defer st.waiting.Add(-1)
	var got *hold
	try := func(now time.Time) (time.Time, bool) {
		h, retryAt := pr.tryAcquire(now)
		got = h
		// A shared state that became unreachable (on_error reject) ends
		// the wait: the request is refused below.
		return retryAt, h != nil || pr.rl.state.unavailable()
	}
	waited, err := pr.rl.queue.Wait(pr.req.Context(), pr.priority, pr.deadline, try)
	pr.queued += waited
	if waited > 0 {
		queueWait.Observe(waited.Seconds())
	}
	switch {
	case err == nil && got == nil && pr.rl.state.unavailable():
		return nil, errStateUnavailable()
	case err == nil:
		return got, nil
	case errors.Is(err, limit.ErrQueueFull):
		pr.rl.events.queueFull(pr.rl.MaxQueue, time.Now())
		return nil, errNoCapacity(time.Second, "the relay's queue is full.")
	case errors.Is(err, limit.ErrDeadline):
		wait := time.Second
		if de, ok := errors.AsType[*limit.DeadlineError](err); ok && !de.RetryAt.IsZero() {
			if !de.RetryAt.Before(neverTime) {
				return nil, errNoKeys() // retired meanwhile: no time to give
			}
			wait = max(time.Until(de.RetryAt), time.Second)
		}
		return nil, errNoCapacity(wait, pr.capacityReason())
	default:
		return nil, nil // the client left
	}
}

// tooLarge refuses, as the upstream would, a request whose estimate exceeds
// the whole minute allowance (TPM) of every key that could serve it: it
// would be refused wherever it went, and sending it would only cost a
// request. The upstream counts the prompt and the request's own max tokens
// (not the relay's default allowance). It stops at the first key that could
// take it, so a request that fits costs one look.
func (pr *proxyRequest) tooLarge() *apiError {
	requested := pr.promptEst + pr.api.maxOut
	largest := int64(0)
	for k := range pr.route.keys() {
		if k.state.retired() {
			continue
		}
		tpm := k.limiter.Limits().TPM
		if tpm == 0 || requested <= tpm {
			return nil
		}
		largest = max(largest, tpm)
	}
	if largest == 0 {
		return nil
	}
	return errRequestTooLarge(pr.api.model, largest, requested)
}

// capacityReason says what the request waited for, for the 429 message.
func (pr *proxyRequest) capacityReason() string {
	if pr.clientLimited {
		return "this client's own rate limit is reached."
	}
	return "no upstream key has capacity for this request within the wait limit."
}

// anyKeyLeft reports whether the route has a key that is not retired: with
// none, waiting cannot help.
func (pr *proxyRequest) anyKeyLeft() bool {
	for k := range pr.route.keys() {
		if !k.state.retired() {
			return true
		}
	}
	return false
}

// tryAcquire makes one attempt to take capacity at now: the client's limits
// first, then the tiers in order. A higher tier is tried only when no key of
// the lower tiers can serve before the request's deadline. It returns the
// hold on a key, or the earliest time one could succeed (zero: after some
// release).
func (pr *proxyRequest) tryAcquire(now time.Time) (*hold, time.Time) {
	if cl := pr.client.limiter; cl != nil {
		if at, ok := cl.Check(now, pr.estimate); !ok {
			pr.clientLimited = true
			return nil, at
		}
	}
	pr.clientLimited = false
	if k := pr.pinnedKey(); k != nil {
		// The response this request continues lives with this key's
		// organisation: wait for this key rather than go elsewhere.
		if h, ok := reserve(pr.rl.state, now, k, pr.client.limiter, pr.estimate); ok {
			return h, time.Time{}
		}
		at, _ := k.limiter.Check(now, pr.estimate)
		return nil, at
	}
	var earliest time.Time
	for ti, t := range pr.route.tiers {
		h, at := pr.tryTier(now, t, pr.route.eligible[ti])
		if h != nil {
			return h, time.Time{}
		}
		if at.IsZero() || !at.After(pr.deadline) {
			// This tier can serve within the wait budget: wait for it
			// rather than fall back.
			return nil, at
		}
		if earliest.IsZero() || at.Before(earliest) {
			earliest = at
		}
	}
	return nil, earliest
}

// neverTime stands for "no key of this tier can serve" in retry times.
var neverTime = time.Unix(1<<40, 0)

// tryTier tries the tier's eligible upstreams by weight, and within each the
// balance policy's keys. Keys that failed this request are avoided while
// others can serve, and after a server error so are the upstreams that gave
// it.
func (pr *proxyRequest) tryTier(now time.Time, t *tier, eligible []bool) (*hold, time.Time) {
	if at, ok := t.saturated(pr.estimate, eligible, now); ok {
		return nil, at
	}
	gen := capacityGen.Load()
	passes := [...]struct{ keys, upstreams bool }{{true, true}, {true, false}, {false, false}}
	first := 0
	if len(pr.tried) == 0 && len(pr.failedUp) == 0 {
		first = len(passes) - 1 // nothing to avoid: one pass
	}
	for _, avoid := range passes[first:] {
		if h := pr.tryUpstreams(now, t, eligible, avoid.keys, avoid.upstreams); h != nil {
			return h, time.Time{}
		}
	}
	at := pr.earliestInTier(now, t, eligible)
	t.markSaturated(gen, pr.estimate, eligible, at)
	return nil, at
}

func (pr *proxyRequest) tryUpstreams(now time.Time, t *tier, eligible []bool, avoidKeys, avoidUpstreams bool) *hold {
	var excluded []bool // upstreams found without room during this pass
	for {
		ui := t.upSel.pick(len(t.upstreams),
			func(i int) int { return t.upstreams[i].Weight },
			func(i int) bool {
				return eligible[i] && (excluded == nil || !excluded[i]) &&
					!(avoidUpstreams && containsPtr(pr.failedUp, t.upstreams[i]))
			})
		if ui < 0 {
			return nil
		}
		// The hold is passed out through pr: a local captured by the
		// closure would cost an allocation a pick.
		pr.picked = nil
		t.pickers[ui].pick(now, func(k *poolKey) bool {
			if avoidKeys && containsPtr(pr.tried, k) {
				return false
			}
			if pr.upgrade != nil && !pr.rl.sessionRoom(k) {
				return false
			}
			h, ok := reserve(pr.rl.state, now, k, pr.client.limiter, pr.estimate)
			pr.picked = h
			return ok
		})
		if h := pr.picked; h != nil {
			pr.picked = nil
			return h
		}
		if excluded == nil {
			excluded = make([]bool, len(t.upstreams))
		}
		excluded[ui] = true
	}
}

// earliestInTier is when the first eligible key of the tier could take the
// request: the zero Time if one only waits for a request in flight to end,
// neverTime if every key is retired.
func (pr *proxyRequest) earliestInTier(now time.Time, t *tier, eligible []bool) time.Time {
	earliest := neverTime
	for ui, keys := range t.keys {
		if !eligible[ui] {
			continue
		}
		for _, k := range keys {
			if k.state.retired() {
				continue
			}
			at, ok := k.limiter.Check(now, pr.estimate)
			if ok || at.IsZero() {
				return time.Time{} // has room, or will after a release
			}
			if at.Before(earliest) {
				earliest = at
			}
		}
	}
	return earliest
}

// tierHint remembers that a full search of a tier found no room for a
// request of some cost and set of eligible upstreams, until some time, so
// that the queue's retries of many waiting requests do not each scan
// thousands of keys. Any release of capacity invalidates the hint.
type tierHint struct {
	mu       sync.Mutex
	gen      uint64
	cost     int64
	eligible uint64 // bitmask of the eligible upstreams
	until    time.Time
	valid    bool
}

// eligibleMask packs the eligible upstreams into a bitmask; ok is false for
// tiers of more than 64 upstreams, which get no hints.
func eligibleMask(eligible []bool) (mask uint64, ok bool) {
	if len(eligible) > 64 {
		return 0, false
	}
	for i, e := range eligible {
		if e {
			mask |= 1 << i
		}
	}
	return mask, true
}

func (t *tier) saturated(cost int64, eligible []bool, now time.Time) (time.Time, bool) {
	mask, ok := eligibleMask(eligible)
	if !ok {
		return time.Time{}, false
	}
	h := &t.hint
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.valid || h.gen != capacityGen.Load() || h.eligible != mask || cost < h.cost ||
		h.until.IsZero() || !now.Before(h.until) {
		return time.Time{}, false
	}
	return h.until, true
}

func (t *tier) markSaturated(gen uint64, cost int64, eligible []bool, until time.Time) {
	mask, ok := eligibleMask(eligible)
	if !ok {
		return
	}
	h := &t.hint
	h.mu.Lock()
	h.gen, h.cost, h.eligible, h.until, h.valid = gen, cost, mask, until, true
	h.mu.Unlock()
}
