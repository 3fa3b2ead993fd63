package limit

import (
	"net/http"
	"time"
)

// BucketState is the shared part of a token bucket: what a store common to
// several instances keeps so that they all see one bucket. Its times are
// Unix nanoseconds and its costs nanoseconds of refill, expressed at Limit
// units a minute; the burst is configuration and is not part of it.
type BucketState struct {
	// Limit is the rate, in units a minute, at which TAT, Sent and Pending
	// are expressed; 0 when the bucket is not modelled.
	Limit int64 `json:"limit"`
	// TAT is the instant the bucket is full again.
	TAT int64 `json:"tat"`
	// Sent is the instant the model of the upstream's bucket is full again,
	// and Pending the refill time reserved and not sent yet (see bucket.sent).
	Sent    int64 `json:"sent"`
	Pending int64 `json:"pending"`
}

// State is everything of a limiter that several instances sharing one set of
// limits have to agree on: the buckets, the daily counters, the requests in
// flight, the cool-down and the learned limits. The configured limits are
// not part of it: each instance has its own configuration.
type State struct {
	// At is the time, Unix ns, the state is as of: the shared store's
	// clock when it produced it, or the limiter's latest time seen.
	At int64 `json:"at"`

	Req BucketState `json:"req"`
	Tok BucketState `json:"tok"`

	// Day is the UTC day number (days since the Unix epoch) that
	// RequestsToday and TokensToday count.
	Day           int64 `json:"day"`
	RequestsToday int64 `json:"requests_today"`
	TokensToday   int64 `json:"tokens_today"`

	InFlight int64 `json:"in_flight"`
	// Cool is the end of the cool-down, Unix ns; 0 when there has been none.
	Cool int64 `json:"cool"`

	// LearnedRPM and LearnedTPM are the limits the upstream's headers taught.
	LearnedRPM int64 `json:"learned_rpm"`
	LearnedTPM int64 `json:"learned_tpm"`
}

func (b *bucket) state() BucketState {
	return BucketState{Limit: b.limit, TAT: b.tat, Sent: b.sent, Pending: b.pending}
}

// State returns the limiter's shared state, as of its latest time seen.
func (l *Limiter) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return State{
		At:            l.last,
		Req:           l.req.state(),
		Tok:           l.tok.state(),
		Day:           l.day,
		RequestsToday: l.reqToday,
		TokensToday:   l.tokToday,
		InFlight:      l.inFlight,
		Cool:          l.cool,
		LearnedRPM:    l.learned.RPM,
		LearnedTPM:    l.learned.TPM,
	}
}

// SetState replaces the limiter's shared state by s, as read from a store
// that several instances share. The limiter then mirrors the store: Check,
// Headroom and Status report from it. The effective limits are recomputed
// from the configured ones and the learned ones in s; a bucket whose state
// s expresses at another rate than the one now in force is converted at
// s.At as SetLimits converts it, so a mirror whose configuration differs
// from the store's still reads sensibly until the store is next written.
func (l *Limiter) SetState(s State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen(s.At)
	l.learned.RPM, l.learned.TPM = max(s.LearnedRPM, 0), max(s.LearnedTPM, 0)
	l.req.limit, l.req.tat, l.req.sent, l.req.pending = max(s.Req.Limit, 0), s.Req.TAT, s.Req.Sent, s.Req.Pending
	l.tok.limit, l.tok.tat, l.tok.sent, l.tok.pending = max(s.Tok.Limit, 0), s.Tok.TAT, s.Tok.Sent, s.Tok.Pending
	l.day, l.reqToday, l.tokToday = s.Day, s.RequestsToday, s.TokensToday
	l.inFlight = s.InFlight
	l.cool = s.Cool
	t := s.At
	if t == 0 {
		t = l.last
	}
	l.refresh(t)
}

// SetLimitsAt is SetLimits converting the buckets at now rather than at the
// latest time seen. A shared store converts a bucket when it is next written
// with the new limits; this lets a limiter do the same at the same instant.
func (l *Limiter) SetLimitsAt(now time.Time, lim Limits) {
	t := now.UnixNano()
	l.mu.Lock()
	l.seen(t)
	l.conf = lim
	l.refresh(t)
	l.mu.Unlock()
}

// Raise is a change to a limiter's state that only ever raises it: learned
// limits to set, bucket states to push later, a cool-down to extend. Learning
// from headers and recording a 429 are expressed as a Raise (LearnRaise,
// ExhaustedRaise) so that an instance sharing its state can compute the
// target with this package's own rules on its mirror and push "at least
// this" to the shared store, where a concurrent writer can only have moved
// the state the same way: taking the maximum of the two is then right
// whatever the order.
type Raise struct {
	// LearnedRPM and LearnedTPM, when positive, become the learned limits.
	// The bucket targets below are expressed at the effective rate that
	// results.
	LearnedRPM int64 `json:"learned_rpm,omitempty"`
	LearnedTPM int64 `json:"learned_tpm,omitempty"`
	// ReqTAT and TokTAT, Unix ns, when positive: the bucket is full no
	// earlier than this. A bucket without a limit ignores them.
	ReqTAT int64 `json:"req_tat,omitempty"`
	TokTAT int64 `json:"tok_tat,omitempty"`
	// Cool, Unix ns, when positive: nothing is admitted before it.
	Cool int64 `json:"cool,omitempty"`
}

// LearnRaise returns what LearnAsOf(asOf, now, h) would do to the limiter,
// without doing it: LearnAsOf is ApplyRaise(now, LearnRaise(asOf, now, h)).
func (l *Limiter) LearnRaise(asOf, now time.Time, h http.Header) Raise {
	rq, tk, ok := readHeaders(h)
	if !ok {
		return Raise{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.learnRaise(asOf, now, rq, tk)
}

// readHeaders reads both dimensions of the headers, and whether they say
// anything at all.
func readHeaders(h http.Header) (rq, tk learned, ok bool) {
	if len(h) == 0 {
		return rq, tk, false
	}
	rq = readDimension(h, hdrLimitRequests, hdrRemainingRequests, hdrResetRequests)
	tk = readDimension(h, hdrLimitTokens, hdrRemainingTokens, hdrResetTokens)
	return rq, tk, rq.hasLimit || rq.hasRemaining || tk.hasLimit || tk.hasRemaining
}

// learnRaise is LearnRaise of parsed headers, with l.mu held.
func (l *Limiter) learnRaise(asOf, now time.Time, rq, tk learned) Raise {
	at := min(asOf.UnixNano(), now.UnixNano())
	var r Raise
	learned := l.learned
	if rq.hasLimit {
		r.LearnedRPM, learned.RPM = rq.limit, rq.limit
	}
	if tk.hasLimit {
		r.LearnedTPM, learned.TPM = tk.limit, tk.limit
	}
	eff := l.conf.withDefaults()
	if eff.RPM == 0 {
		eff.RPM = learned.RPM
	}
	if eff.TPM == 0 {
		eff.TPM = learned.TPM
	}
	// The targets depend on the rate only, not on the bucket's state.
	var req, tok bucket
	req.configure(0, eff.RPM, eff.Burst)
	tok.configure(0, eff.TPM, eff.Burst)
	if rq.hasRemaining {
		r.ReqTAT, _ = req.pullTarget(at, rq.remaining, rq.limit, rq.reset, rq.hasReset)
	}
	if tk.hasRemaining {
		r.TokTAT, _ = tok.pullTarget(at, tk.remaining, tk.limit, tk.reset, tk.hasReset)
	}
	return r
}

// ExhaustedRaise returns what Exhausted(until, tokens) would do to the
// limiter, without doing it, at the rates now in force.
func (l *Limiter) ExhaustedRaise(until time.Time, tokens int64) Raise {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exhaustedRaise(until, tokens)
}

// ApplyRaise applies r at now: the learned limits first (converting the
// buckets at now if the effective rate changes), then the bucket and
// cool-down floors. Nothing is ever lowered. It reports whether anything
// changed: a store shared by several instances needs r only then.
func (l *Limiter) ApplyRaise(now time.Time, r Raise) bool {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen(t)
	return l.applyRaise(t, r)
}

// applyRaise is ApplyRaise with l.mu held.
func (l *Limiter) applyRaise(t int64, r Raise) bool {
	learned := false
	if r.LearnedRPM > 0 && r.LearnedRPM != l.learned.RPM {
		l.learned.RPM, learned = r.LearnedRPM, true
	}
	if r.LearnedTPM > 0 && r.LearnedTPM != l.learned.TPM {
		l.learned.TPM, learned = r.LearnedTPM, true
	}
	if learned {
		l.refresh(t)
	}
	raised := learned
	if r.ReqTAT > l.req.tat && l.req.limit > 0 {
		l.req.tat, raised = r.ReqTAT, true
	}
	if r.TokTAT > l.tok.tat && l.tok.limit > 0 {
		l.tok.tat, raised = r.TokTAT, true
	}
	if r.Cool > l.cool {
		l.cool, raised = r.Cool, true
	}
	return raised
}
