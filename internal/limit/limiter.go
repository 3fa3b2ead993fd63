package limit

import (
	"math"
	"sync"
	"time"
)

// Unlimited is what Status reports as remaining for a dimension without a limit.
const Unlimited = -1

const (
	minute = int64(time.Minute)
	dayNs  = int64(24 * time.Hour)

	// maxCost caps the refill time of a single reservation (about 36 years) so
	// that sums of costs and Unix nanoseconds cannot overflow int64.
	maxCost = int64(1) << 60

	// maxUntil caps the end of a cool-down, so that a bucket target past it
	// cannot overflow either.
	maxUntil = math.MaxInt64 - 2*maxCost
)

// DefaultBurst is the window whose worth of RPM and TPM a bucket holds when
// Limits.Burst is zero.
const DefaultBurst = time.Second

// UpstreamWindow is the window over which OpenAI enforces its per-minute
// limits: a bucket upstream holds one second's worth (at least one unit). A
// local Burst shorter than that leaves the difference as a margin for the
// jitter between a request's departure and its arrival: a bucket keeps it as
// capacity unused while its burst holds more than one unit, and as extra
// spacing between units that cost more than the burst (60 RPM or fewer at a
// 900ms burst: one request every 1.1s instead of every 1s at 60 RPM).
const UpstreamWindow = time.Second

// Limits are the limits of one key, limit group or client. Zero means unlimited.
type Limits struct {
	// RPM and TPM are requests and tokens a minute, enforced by token buckets.
	RPM int64 `json:"rpm,omitempty"`
	TPM int64 `json:"tpm,omitempty"`

	// RPD and TPD are requests and tokens a UTC day.
	RPD int64 `json:"rpd,omitempty"`
	TPD int64 `json:"tpd,omitempty"`

	// MaxConcurrent caps the requests in flight.
	MaxConcurrent int64 `json:"max_concurrent,omitempty"`

	// Burst is the window whose worth of RPM and TPM a bucket holds; zero
	// means DefaultBurst. A bucket holds at least one unit whatever Burst is,
	// and a request that costs more tokens than the bucket holds is admitted
	// against a full bucket, leaving it in debt (see the package doc).
	Burst time.Duration `json:"burst,omitempty"`
}

// withDefaults returns the limits with negative values read as zero and Burst defaulted.
func (l Limits) withDefaults() Limits {
	l.RPM = max(l.RPM, 0)
	l.TPM = max(l.TPM, 0)
	l.RPD = max(l.RPD, 0)
	l.TPD = max(l.TPD, 0)
	l.MaxConcurrent = max(l.MaxConcurrent, 0)
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	return l
}

// bucket is a token bucket in GCRA form. Its whole state is tat, the instant
// at which it is full again; the level at t is (tau - (tat - t)) / per-unit
// refill time. Keeping time rather than a count makes refill free and exact.
type bucket struct {
	limit int64 // units a minute; 0 means unlimited
	tau   int64 // refill time, in ns, that a full bucket holds
	tat   int64 // Unix ns at which the bucket is full again

	// burst is the configured window, and margin what it falls short of
	// UpstreamWindow: the arrival jitter the bucket absorbs.
	burst, margin int64

	// sent models the upstream's own bucket, charged when a request leaves
	// (markSent) rather than when it is reserved, and pending is the cost
	// reserved and not sent yet. The upstream counts requests as they arrive:
	// requests reserved together but delayed unequally on their way reach it
	// closer together than their reservations, so tat is kept at least
	// sent + pending, the upstream's view with everything pending sent now.
	sent, pending int64
}

// reserve takes cost c at t for a request not yet sent.
func (b *bucket) reserve(t, c int64) {
	b.take(t, c)
	b.pending += c
}

// markSent charges the upstream model with c at t, the moment the request
// it was reserved for leaves.
func (b *bucket) markSent(t, c int64) {
	b.pending = max(b.pending-c, 0)
	b.sent = min(max(b.sent, t), math.MaxInt64-maxCost) + c
	b.tat = max(b.tat, b.sent+b.pending)
}

// release gives back c, reserved for a request that was sent or not.
func (b *bucket) release(c int64, wasSent bool) {
	b.give(c)
	if wasSent {
		b.sent = max(b.sent-c, 0)
	} else {
		b.pending = max(b.pending-c, 0)
	}
}

// price is what a reservation of n units takes from the bucket: their refill
// time, and for a cost beyond the bucket's burst the part of the jitter
// margin that the burst cannot keep (see UpstreamWindow). The upstream
// admits a request that costs more than its window holds only on a full
// bucket: a request that left the relay later than the one before it, and
// arrived no later, would find it short by the difference, so such costs
// are spaced that much further apart.
func (b *bucket) price(n int64) int64 {
	c := b.cost(n)
	return c + min(max(c-b.burst, 0), b.margin)
}

// cost is the refill time of n units in ns, rounded up so that rounding never
// admits more than the limit.
func (b *bucket) cost(n int64) int64 {
	if n <= 0 || b.limit <= 0 {
		return 0
	}
	if n > math.MaxInt64/minute {
		// Absurdly large: the float keeps the magnitude, which is all that matters here.
		return int64(min(float64(n)*float64(minute)/float64(b.limit), float64(maxCost)))
	}
	p := n * minute
	c := p / b.limit
	if p%b.limit != 0 {
		c++
	}
	return min(c, maxCost)
}

// capped is the part of n units that a reservation takes from the bucket:
// never more than a whole minute's allowance. The upstream refuses a larger
// request outright ("Request too large"), so no more can be owed for one
// request, and a client-chosen max_tokens of 10^12 cannot block a key for
// years.
func (b *bucket) capped(n int64) int64 {
	if b.limit > 0 {
		return min(n, b.limit)
	}
	return n
}

// backlog is how long the bucket needs at t to be full again.
func (b *bucket) backlog(t int64) int64 {
	return max(b.tat-t, 0)
}

// fits reports whether a cost c fits at t and, if not, the earliest instant it will.
// A cost beyond the capacity fits a full bucket (the debt rule).
func (b *bucket) fits(t, c int64) (int64, bool) {
	if b.limit == 0 {
		return 0, true
	}
	allow := max(b.tau, c)
	if b.backlog(t)+c <= allow {
		return 0, true
	}
	return b.tat + c - allow, false
}

// take removes cost c at t, allowing the level to go negative.
func (b *bucket) take(t, c int64) {
	b.tat = min(max(b.tat, t), math.MaxInt64-maxCost) + c
}

// give puts back cost c. A tat in the past means full, so clamping at zero loses nothing.
func (b *bucket) give(c int64) {
	b.tat = max(b.tat-c, 0)
}

// level is the number of units the bucket holds at t, possibly negative.
func (b *bucket) level(t int64) float64 {
	return float64(b.tau-b.backlog(t)) * float64(b.limit) / float64(minute)
}

// configure sets a new limit and burst at t. What was consumed and not yet
// refilled stays consumed: the deficit in units is kept across a rate change.
func (b *bucket) configure(t, limit int64, burst time.Duration) {
	if limit <= 0 {
		*b = bucket{}
		return
	}
	if b.limit > 0 && b.limit != limit {
		if d := b.backlog(t); d > 0 {
			b.tat = t + int64(min(float64(d)*float64(b.limit)/float64(limit), float64(maxCost)))
		}
		// Costs in flight were counted at the old rate: start the
		// upstream model afresh rather than mix the two.
		b.sent, b.pending = 0, 0
	}
	b.limit = limit
	b.burst = int64(burst)
	b.margin = max(int64(UpstreamWindow)-b.burst, 0)
	b.tau = max(b.burst, b.price(1))
}

// pullTarget is how the bucket is lowered to the upstream's state as of
// asOf. OpenAI reports its limits by the minute: rem is what remains of the
// minute's allowance of upLimit, and reset the time until it is whole again
// (limit 60, remaining 59, reset 1s after one request), while it enforces over
// about a second. What it misses, upLimit - rem units, is a backlog that takes
// reset to refill: the local bucket is to be full no earlier than the
// returned instant, asOf plus that (at the local rate, if slower). ok is
// false when the headers ask nothing of the bucket. The target depends on
// the bucket's rate only, so that it can be pushed to a shared store as a
// floor (see Raise).
func (b *bucket) pullTarget(asOf, rem, upLimit int64, reset time.Duration, haveReset bool) (int64, bool) {
	if b.limit == 0 || rem < 0 {
		return 0, false
	}
	if upLimit <= 0 {
		upLimit = b.limit
	}
	missing := upLimit - rem
	if missing <= 0 {
		return 0, false
	}
	target := b.cost(missing)
	if haveReset {
		target = max(target, int64(min(reset, time.Duration(maxCost))))
	}
	asOf = min(max(asOf, 0), math.MaxInt64-maxCost)
	return asOf + min(target, maxCost), true
}

// dayOf is the UTC day number (days since the Unix epoch) of Unix ns t.
func dayOf(t int64) int64 {
	d := t / dayNs
	if t%dayNs < 0 {
		d--
	}
	return d
}

// Flags recording which buckets a reservation took from, so that a limit
// added or removed in between does not give back what was never taken.
const (
	tookReq uint8 = 1 << iota
	tookTok
	// tokensOnly marks a reservation of tokens alone (ReserveTokens): it
	// took no request, no daily request and no concurrency slot.
	tokensOnly
)

// Limiter enforces one set of Limits. It is safe for concurrent use; every
// method holds its mutex only for a few arithmetic operations.
type Limiter struct {
	mu sync.Mutex

	conf    Limits // as configured
	learned Limits // RPM and TPM from the upstream's headers
	eff     Limits // conf, with learned filled in where conf is zero and defaults applied

	req bucket
	tok bucket

	day      int64 // UTC day number the daily counters are for
	reqToday int64
	tokToday int64

	inFlight int64
	cool     int64 // Unix ns until which nothing is admitted; 0 when not cooling
	last     int64 // latest time seen, Unix ns; SetLimits converts bucket state at it
}

// NewLimiter returns a limiter enforcing l, with full buckets and empty counters.
func NewLimiter(l Limits) *Limiter {
	lim := new(Limiter)
	lim.conf = l
	lim.refresh(0)
	return lim
}

// refresh recomputes the effective limits and reconfigures the buckets at t.
// The caller holds l.mu (or owns l exclusively).
func (l *Limiter) refresh(t int64) {
	eff := l.conf.withDefaults()
	if eff.RPM == 0 {
		eff.RPM = l.learned.RPM
	}
	if eff.TPM == 0 {
		eff.TPM = l.learned.TPM
	}
	l.eff = eff
	l.req.configure(t, eff.RPM, eff.Burst)
	l.tok.configure(t, eff.TPM, eff.Burst)
}

// seen advances the latest time seen.
func (l *Limiter) seen(t int64) {
	if t > l.last {
		l.last = t
	}
}

// SetLimits replaces the configured limits, as on a config reload. Consumed
// state is kept: what was taken from a bucket and not yet refilled stays
// taken, in units, at the new rate; the daily counters and requests in flight
// are untouched.
func (l *Limiter) SetLimits(lim Limits) {
	l.mu.Lock()
	l.conf = lim
	l.refresh(l.last)
	l.mu.Unlock()
}

// Limits returns the limits in force: the configured ones, with the learned
// RPM and TPM filled in where the configuration has zero, and Burst defaulted.
func (l *Limiter) Limits() Limits {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.eff
}

// today returns the daily counters as they stand at UTC day d, without
// rolling them over (a new day starts at zero).
func (l *Limiter) today(d int64) (reqs, toks int64) {
	if d > l.day {
		return 0, 0
	}
	return l.reqToday, l.tokToday
}

// check reports whether n tokens fit at t, with one request when request is
// set, with the bucket costs to take if so, or the earliest instant it could
// fit: 0 when only a release of concurrency can help. Tokens alone (the
// answers within a session that already holds its request and slot) are
// checked against the cool-down, the token bucket and the daily tokens only.
// The caller holds l.mu.
func (l *Limiter) check(t, n int64, request bool) (cr, ct, at int64, ok bool) {
	ok = true
	if l.cool > t {
		at, ok = l.cool, false
	}
	if request {
		cr = l.req.price(1)
		if a, fit := l.req.fits(t, cr); !fit {
			at, ok = max(at, a), false
		}
	}
	ct = l.tok.price(l.tok.capped(n))
	if a, fit := l.tok.fits(t, ct); !fit {
		at, ok = max(at, a), false
	}
	d := dayOf(t)
	reqs, toks := l.today(d)
	if request && l.eff.RPD > 0 && reqs >= l.eff.RPD {
		at, ok = max(at, (max(d, l.day)+1)*dayNs), false
	}
	// A request bigger than the whole day's allowance passes on an untouched
	// day, for the same reason as the bucket debt rule: otherwise it never would.
	if l.eff.TPD > 0 && toks+n > l.eff.TPD && (toks > 0 || n <= l.eff.TPD) {
		at, ok = max(at, (max(d, l.day)+1)*dayNs), false
	}
	if request && l.eff.MaxConcurrent > 0 && l.inFlight >= l.eff.MaxConcurrent {
		at, ok = 0, false
	}
	return cr, ct, at, ok
}

// unixTime converts Unix ns to a time.Time; 0 stays the zero Time.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Reserve takes one request and tokens from every bucket and daily counter,
// and one concurrency slot, if all have room at now. When ok is false nothing
// was taken and retryAt is the earliest time it could succeed: the end of a
// cool-down, a bucket's refill, the next UTC midnight for an exhausted daily
// counter, or the zero Time when MaxConcurrent is reached (only a release can
// help then). Each successful Reservation must be settled or cancelled once.
func (l *Limiter) Reserve(now time.Time, tokens int64) (r Reservation, retryAt time.Time, ok bool) {
	return l.reserve(now, tokens, true)
}

// ReserveTokens takes tokens alone, as Reserve does but without a request,
// a daily request or a concurrency slot: for the answers within a session
// (a WebSocket) whose own Reserve took those for as long as it is open.
func (l *Limiter) ReserveTokens(now time.Time, tokens int64) (r Reservation, retryAt time.Time, ok bool) {
	return l.reserve(now, tokens, false)
}

func (l *Limiter) reserve(now time.Time, tokens int64, request bool) (r Reservation, retryAt time.Time, ok bool) {
	tokens = max(tokens, 0)
	t := now.UnixNano()
	l.mu.Lock()
	l.seen(t)
	cr, ct, at, ok := l.check(t, tokens, request)
	if !ok {
		l.mu.Unlock()
		return Reservation{}, unixTime(at), false
	}
	if d := dayOf(t); d > l.day {
		l.day, l.reqToday, l.tokToday = d, 0, 0
	}
	l.tokToday += tokens
	var took uint8
	if request {
		l.reqToday++
		l.inFlight++
		if l.req.limit > 0 {
			l.req.reserve(t, cr)
			took |= tookReq
		}
	} else {
		took |= tokensOnly
	}
	if l.tok.limit > 0 {
		l.tok.reserve(t, ct)
		took |= tookTok
	}
	r = Reservation{l: l, tokens: tokens, bucketTokens: l.tok.capped(tokens), cr: cr, ct: ct, day: int32(l.day), took: took}
	l.mu.Unlock()
	return r, time.Time{}, true
}

// Check reports what Reserve would at now, without taking anything.
func (l *Limiter) Check(now time.Time, tokens int64) (retryAt time.Time, ok bool) {
	return l.checkAt(now, tokens, true)
}

// CheckTokens reports what ReserveTokens would at now, without taking anything.
func (l *Limiter) CheckTokens(now time.Time, tokens int64) (retryAt time.Time, ok bool) {
	return l.checkAt(now, tokens, false)
}

func (l *Limiter) checkAt(now time.Time, tokens int64, request bool) (retryAt time.Time, ok bool) {
	t := now.UnixNano()
	l.mu.Lock()
	_, _, at, ok := l.check(t, max(tokens, 0), request)
	l.mu.Unlock()
	return unixTime(at), ok
}

// Reservation is what one successful Reserve took. It is a small value; keep
// it where it was returned and settle or cancel it through a pointer to that
// variable (a copy settled as well would give back twice). The zero
// Reservation is valid, and settling or cancelling it does nothing.
type Reservation struct {
	l            *Limiter
	tokens       int64
	bucketTokens int64 // the part of tokens the token bucket took (see bucket.capped)
	cr, ct       int64 // the refill time taken from the request and token buckets
	day          int32
	took         uint8
	sent         bool
}

// Tokens returns the tokens reserved.
func (r *Reservation) Tokens() int64 { return r.tokens }

// Settle corrects the reservation's tokens to actual, giving back or taking
// more, on the token bucket and on the daily token counter of the day the
// reservation was made (if that day is still current), and releases the
// concurrency slot. Taking more never fails: the bucket goes into debt. Only
// the first Settle or Cancel of a reservation has an effect.
func (r *Reservation) Settle(now time.Time, actual int64) {
	l := r.l
	if l == nil {
		return
	}
	r.l = nil
	actual = max(actual, 0)
	t := now.UnixNano()
	l.mu.Lock()
	l.seen(t)
	if r.took&tokensOnly == 0 {
		l.inFlight--
	}
	if !r.sent {
		// Settled without being sent (a request that never left, yet is to
		// be counted): it stops being pending.
		if r.took&tookReq != 0 {
			l.req.pending = max(l.req.pending-r.cr, 0)
		}
		if r.took&tookTok != 0 {
			l.tok.pending = max(l.tok.pending-r.ct, 0)
		}
	}
	if r.took&tookTok != 0 && l.tok.limit > 0 {
		switch d := l.tok.capped(actual) - r.bucketTokens; {
		case d > 0:
			c := l.tok.cost(d)
			l.tok.take(t, c)
			if r.sent {
				l.tok.sent = min(max(l.tok.sent, t), math.MaxInt64-maxCost) + c
			}
		case d < 0:
			l.tok.release(l.tok.cost(-d), true)
		}
	}
	if int64(r.day) == l.day {
		l.tokToday = max(l.tokToday+actual-r.tokens, 0)
	}
	l.mu.Unlock()
}

// Retime tells the limiter that the request leaves for the upstream now.
// The upstream counts a request when it arrives: requests reserved together
// but delayed unequally on their way (a new connection, a busy machine) reach
// it closer together than their reservations were, and it could then see
// more within its window than the local bucket allowed. Charging a model of
// the upstream's bucket at send time, and keeping the local bucket at least
// as empty as that model, prevents this (see bucket.sent). Only the first
// call has an effect, and none after Settle or Cancel.
func (r *Reservation) Retime(now time.Time) {
	l := r.l
	if l == nil || r.sent {
		return
	}
	r.sent = true
	t := now.UnixNano()
	l.mu.Lock()
	l.seen(t)
	if r.took&tookReq != 0 && l.req.limit > 0 {
		l.req.markSent(t, r.cr)
	}
	if r.took&tookTok != 0 && l.tok.limit > 0 {
		l.tok.markSent(t, r.ct)
	}
	l.mu.Unlock()
}

// Cancel gives back everything the reservation took (the request, its tokens
// and the concurrency slot), for a request that never reached the upstream.
// Only the first Settle or Cancel of a reservation has an effect.
func (r *Reservation) Cancel(now time.Time) {
	l := r.l
	if l == nil {
		return
	}
	r.l = nil
	t := now.UnixNano()
	l.mu.Lock()
	l.seen(t)
	request := r.took&tokensOnly == 0
	if request {
		l.inFlight--
	}
	if r.took&tookReq != 0 && l.req.limit > 0 {
		l.req.release(r.cr, r.sent)
	}
	if r.took&tookTok != 0 && l.tok.limit > 0 {
		l.tok.release(r.ct, r.sent)
	}
	if int64(r.day) == l.day {
		if request {
			l.reqToday = max(l.reqToday-1, 0)
		}
		l.tokToday = max(l.tokToday-r.tokens, 0)
	}
	l.mu.Unlock()
}

// inlineMulti is how many reservations a Multi holds without allocating:
// enough for a key, its limit group, a client and one more.
const inlineMulti = 4

// Multi is the reservations of one ReserveAll. Like Reservation, settle or
// cancel it through a pointer to the variable ReserveAll's result was stored in.
type Multi struct {
	n    int
	rs   [inlineMulti]Reservation
	more []Reservation
}

func (m *Multi) add(r Reservation) {
	if m.n < inlineMulti {
		m.rs[m.n] = r
	} else {
		m.more = append(m.more, r)
	}
	m.n++
}

func (m *Multi) at(i int) *Reservation {
	if i < inlineMulti {
		return &m.rs[i]
	}
	return &m.more[i-inlineMulti]
}

// Settle settles every reservation to actual tokens.
func (m *Multi) Settle(now time.Time, actual int64) {
	for i := range m.n {
		m.at(i).Settle(now, actual)
	}
}

// Retime marks every reservation as sent now (see Reservation.Retime).
func (m *Multi) Retime(now time.Time) {
	for i := range m.n {
		m.at(i).Retime(now)
	}
}

// Cancel cancels every reservation.
func (m *Multi) Cancel(now time.Time) {
	for i := range m.n {
		m.at(i).Cancel(now)
	}
}

// ReserveAll reserves one request and tokens on every limiter in ls (nil
// entries are skipped), all or nothing: if one has no room, those already
// taken are cancelled and retryAt is the latest of the retry times of the
// limiters without room (the zero Time if only releases can help). Each
// limiter is locked on its own, so there is no lock ordering to get wrong;
// another reservation may briefly see capacity taken that is then given back.
func ReserveAll(now time.Time, tokens int64, ls ...*Limiter) (m Multi, retryAt time.Time, ok bool) {
	return reserveAll(now, tokens, true, ls)
}

// ReserveAllTokens is ReserveAll of tokens alone (see Limiter.ReserveTokens).
func ReserveAllTokens(now time.Time, tokens int64, ls ...*Limiter) (m Multi, retryAt time.Time, ok bool) {
	return reserveAll(now, tokens, false, ls)
}

func reserveAll(now time.Time, tokens int64, request bool, ls []*Limiter) (m Multi, retryAt time.Time, ok bool) {
	for i, l := range ls {
		if l == nil {
			continue
		}
		r, at, ok := l.reserve(now, tokens, request)
		if ok {
			m.add(r)
			continue
		}
		m.Cancel(now)
		for _, rest := range ls[i+1:] {
			if rest == nil {
				continue
			}
			if a, ok := rest.checkAt(now, tokens, request); !ok && a.After(at) {
				at = a
			}
		}
		return Multi{}, at, false
	}
	return m, time.Time{}, true
}

// Headroom is the fraction, from 0 to 1, left at now of the tightest of the
// limiter's dimensions (buckets, daily counters, concurrency); 1 when
// unlimited, 0 when cooling down or in debt. It is meant for least-loaded
// balancing.
func (l *Limiter) Headroom(now time.Time) float64 {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cool > t {
		return 0
	}
	h := 1.0
	if l.req.limit > 0 {
		h = min(h, float64(l.req.tau-l.req.backlog(t))/float64(l.req.tau))
	}
	if l.tok.limit > 0 {
		h = min(h, float64(l.tok.tau-l.tok.backlog(t))/float64(l.tok.tau))
	}
	reqs, toks := l.today(dayOf(t))
	if l.eff.RPD > 0 {
		h = min(h, float64(l.eff.RPD-reqs)/float64(l.eff.RPD))
	}
	if l.eff.TPD > 0 {
		h = min(h, float64(l.eff.TPD-toks)/float64(l.eff.TPD))
	}
	if l.eff.MaxConcurrent > 0 {
		h = min(h, float64(l.eff.MaxConcurrent-l.inFlight)/float64(l.eff.MaxConcurrent))
	}
	return max(h, 0)
}

// InFlight returns the number of reservations neither settled nor cancelled.
func (l *Limiter) InFlight() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// Exhausted records a 429 rate limit: the limiter cools down until until,
// and its buckets are left so that at until they hold one request of tokens
// and no more. The upstream's reset says when one request fits, not when its
// bucket is full again: a cool-down that ended on a full local bucket would
// let a burst through into the upstream's empty one.
func (l *Limiter) Exhausted(until time.Time, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applyRaise(l.last, l.exhaustedRaise(until, tokens))
}

// exhaustedRaise is ExhaustedRaise with l.mu held.
func (l *Limiter) exhaustedRaise(until time.Time, tokens int64) Raise {
	u := min(max(until.UnixNano(), 0), maxUntil)
	r := Raise{Cool: u}
	if l.req.limit > 0 {
		r.ReqTAT = u + max(l.req.tau-l.req.price(1), 0)
	}
	if l.tok.limit > 0 {
		r.TokTAT = u + max(l.tok.tau-l.tok.price(max(tokens, 0)), 0)
	}
	return r
}

// CoolDown blocks the limiter until the given time, as after a 429: Reserve
// fails with that retry time until then. A cool-down only ever extends; the
// zero Time lifts it.
func (l *Limiter) CoolDown(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.IsZero() {
		l.cool = 0
		return
	}
	l.cool = max(l.cool, until.UnixNano())
}

// CoolingUntil returns the end of the current or last cool-down, or the zero
// Time if there has been none.
func (l *Limiter) CoolingUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return unixTime(l.cool)
}

// Status is a snapshot of a limiter for the admin API and for rate-limit
// response headers. Remaining counts are Unlimited (-1) where there is no limit.
type Status struct {
	// Limits are those in force (see Limiter.Limits).
	Limits Limits `json:"limits"`
	// Configured are the limits as configured.
	Configured Limits `json:"configured"`
	// Learned holds the RPM and TPM taken from the upstream's headers.
	Learned Limits `json:"learned"`

	// RemainingRequests and RemainingTokens are what the buckets hold now:
	// what could be reserved at once.
	RemainingRequests int64 `json:"remaining_requests"`
	RemainingTokens   int64 `json:"remaining_tokens"`
	// ResetRequests and ResetTokens are how long the buckets take to be full.
	ResetRequests time.Duration `json:"reset_requests_ns"`
	ResetTokens   time.Duration `json:"reset_tokens_ns"`

	// RequestsToday and TokensToday are counted over the current UTC day,
	// whether or not there is a daily limit; RemainingRequestsToday and
	// RemainingTokensToday are what RPD and TPD leave of the day.
	RequestsToday          int64 `json:"requests_today"`
	TokensToday            int64 `json:"tokens_today"`
	RemainingRequestsToday int64 `json:"remaining_requests_today"`
	RemainingTokensToday   int64 `json:"remaining_tokens_today"`

	// InFlight counts reservations neither settled nor cancelled.
	InFlight int64 `json:"in_flight"`
	// CoolingUntil is the end of a cool-down in force, or the zero Time.
	CoolingUntil time.Time `json:"cooling_until,omitzero"`
}

// Status returns a snapshot of the limiter at now.
func (l *Limiter) Status(now time.Time) Status {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Status{
		Limits:                 l.eff,
		Configured:             l.conf,
		Learned:                l.learned,
		RemainingRequests:      Unlimited,
		RemainingTokens:        Unlimited,
		RemainingRequestsToday: Unlimited,
		RemainingTokensToday:   Unlimited,
		InFlight:               l.inFlight,
	}
	if l.cool > t {
		s.CoolingUntil = unixTime(l.cool)
	}
	if l.req.limit > 0 {
		s.RemainingRequests = int64(max(math.Floor(l.req.level(t)), 0))
		s.ResetRequests = time.Duration(l.req.backlog(t))
	}
	if l.tok.limit > 0 {
		s.RemainingTokens = int64(max(math.Floor(l.tok.level(t)), 0))
		s.ResetTokens = time.Duration(l.tok.backlog(t))
	}
	s.RequestsToday, s.TokensToday = l.today(dayOf(t))
	if l.eff.RPD > 0 {
		s.RemainingRequestsToday = max(l.eff.RPD-s.RequestsToday, 0)
	}
	if l.eff.TPD > 0 {
		s.RemainingTokensToday = max(l.eff.TPD-s.TokensToday, 0)
	}
	return s
}

// dateLayout is how DailyState writes its day.
const dateLayout = "2006-01-02"

// DailyState is the daily counters of a limiter, to persist across restarts.
type DailyState struct {
	// Day is the UTC date the counts are for, as 2006-01-02.
	Day string `json:"day"`
	// Requests and Tokens are what that day has used.
	Requests int64 `json:"requests"`
	Tokens   int64 `json:"tokens"`
}

// DailySnapshot returns the daily counters as of the limiter's latest
// activity. Restored on a later day, a snapshot limits nothing: the
// counters start that day at zero.
func (l *Limiter) DailySnapshot() DailyState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return DailyState{
		Day:      time.Unix(l.day*(dayNs/int64(time.Second)), 0).UTC().Format(dateLayout),
		Requests: l.reqToday,
		Tokens:   l.tokToday,
	}
}

// RestoreDaily loads persisted daily counters, typically into a new limiter.
// A state for a later day than the limiter's replaces its counters; for the
// same day each counter takes the larger value, so that restoring a snapshot
// twice counts nothing twice; an earlier day, or a malformed state, is ignored.
func (l *Limiter) RestoreDaily(s DailyState) {
	day, err := time.Parse(dateLayout, s.Day)
	if err != nil {
		return
	}
	d := dayOf(day.UnixNano())
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case d > l.day:
		l.day, l.reqToday, l.tokToday = d, max(s.Requests, 0), max(s.Tokens, 0)
	case d == l.day:
		l.reqToday = max(l.reqToday, s.Requests)
		l.tokToday = max(l.tokToday, s.Tokens)
	}
}
