package openairelay

import (
	"context"
	"net/http"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redislimit"
)

// The limiterStore of redisState: limits taken and given back in Redis,
// the mirrors refreshed from every reply.

// load returns the mirror of limiter id, created or with its configured
// limits updated. A new mirror reads Redis's state on the next refresh
// (and on its first reservation's reply); Provision reads them at once
// (redisState.sync).
func (rs *redisState) load(id string, lim Limits) *limit.Limiter {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m := rs.mirrors[id]
	if m == nil {
		m = &mirror{id: id, l: limit.NewLimiter(lim.core()), conf: lim.core()}
		rs.mirrors[id] = m
		rs.byLim[m.l] = m
	} else {
		m.conf = lim.core()
		if !rs.down.Load() {
			m.l.SetLimits(m.conf)
		}
	}
	m.refs++
	return m.l
}

// release drops a config's use of the mirror.
func (rs *redisState) release(id string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m := rs.mirrors[id]
	if m == nil {
		return
	}
	if m.refs--; m.refs <= 0 {
		delete(rs.mirrors, id)
		delete(rs.byLim, m.l)
	}
}

// sync reads every mirror from Redis now, so that a config starts from the
// shared state; an unreachable Redis puts the instance in local mode.
func (rs *redisState) sync() {
	if rs.down.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*rs.timeout)
	defer cancel()
	_ = rs.refreshMirrors(ctx) && rs.refreshHealth(ctx) && rs.beat(ctx)
}

// mirrorsOf returns the mirrors of the limiters (nil ones skipped).
func (rs *redisState) mirrorsOf(ls ...*limit.Limiter) []*mirror {
	ms := make([]*mirror, 0, len(ls))
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, l := range ls {
		if m := rs.byLim[l]; m != nil {
			ms = append(ms, m)
		}
	}
	return ms
}

// mirrorOf returns the mirror of l, nil when l is none of this store's.
func (rs *redisState) mirrorOf(l *limit.Limiter) *mirror {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.byLim[l]
}

// reserve takes the request in Redis, in one round trip, on the key's and
// the client's limiters at once. A refusal (another instance took the
// room) updates the mirrors, so the caller moves on to another key.
func (rs *redisState) reserve(now time.Time, tokens int64, key, client *limit.Limiter) (reservation, bool) {
	return rs.reserveShared(now, tokens, true, key, client)
}

// reserveTokens is reserve of tokens alone (limiterStore.reserveTokens).
func (rs *redisState) reserveTokens(now time.Time, tokens int64, key, client *limit.Limiter) (reservation, bool) {
	return rs.reserveShared(now, tokens, false, key, client)
}

func (rs *redisState) reserveShared(now time.Time, tokens int64, request bool, key, client *limit.Limiter) (reservation, bool) {
	if rs.down.Load() {
		return rs.reserveLocal(now, tokens, request, key, client)
	}
	ms := rs.mirrorsOf(key, client)
	if len(ms) == 0 {
		return reservation{}, true
	}
	items := make([]redislimit.Item, len(ms))
	for i, m := range ms {
		items[i] = redislimit.Item{ID: m.id, Limits: m.l.Limits()}
	}
	var (
		r      *redislimit.Reservation
		states []limit.State
		ok     bool
	)
	err := rs.call(func(ctx context.Context) (err error) {
		reserve := rs.lim.Reserve
		if !request {
			reserve = rs.lim.ReserveTokens
		}
		r, states, _, ok, err = reserve(ctx, tokens, items, leaseTTL)
		return err
	})
	if err != nil {
		// No answer in time: this try fails (the request waits and tries
		// again) and Redis is pinged; only a failed ping means local mode.
		rs.failed(err)
		return reservation{}, false
	}
	var sr *sharedReservation
	rs.mu.Lock()
	for i, m := range ms {
		rs.setMirror(m, states[i])
	}
	if ok {
		sr = &sharedReservation{r: r, mirrors: ms}
		rs.live[sr] = struct{}{}
	}
	rs.mu.Unlock()
	return reservation{shared: sr}, ok
}

// reserveLocal reserves on the mirrors, as memory mode does, with this
// instance's share of the limits (local mode); in reject mode nothing is
// reserved.
func (rs *redisState) reserveLocal(now time.Time, tokens int64, request bool, key, client *limit.Limiter) (reservation, bool) {
	if rs.reject {
		return reservation{}, false
	}
	reserveAll := limit.ReserveAll
	if !request {
		reserveAll = limit.ReserveAllTokens
	}
	m, _, ok := reserveAll(now, tokens, key, client)
	return reservation{local: m}, ok
}

// sent, settle and cancel go to the finisher, off the request's path; a
// reservation made in local mode ends on the mirrors.
func (rs *redisState) sent(r *reservation, now time.Time) {
	if r.shared == nil {
		r.local.Retime(now)
		return
	}
	rs.enqueue(finishOp{sr: r.shared, what: "retime"})
}

func (rs *redisState) settle(r *reservation, now time.Time, tokens int64) {
	if r.shared == nil {
		r.local.Settle(now, tokens)
		return
	}
	rs.enqueue(finishOp{sr: r.shared, what: "settle", actual: tokens})
}

func (rs *redisState) cancel(r *reservation, now time.Time) {
	if r.shared == nil {
		r.local.Cancel(now)
		return
	}
	rs.enqueue(finishOp{sr: r.shared, what: "cancel"})
}

// enqueue hands op to the finisher; with its queue full, the caller waits
// (back-pressure rather than a lost settle).
func (rs *redisState) enqueue(op finishOp) { rs.ops <- op }

// learn applies the headers on the mirror at once and pushes what they
// taught to Redis as floors, off the request's path. In local mode the
// mirror alone learns (its limits are the local share; the headers'
// remaining, which is the whole key's, pulls it down).
func (rs *redisState) learn(l *limit.Limiter, asOf, now time.Time, h http.Header) {
	r := l.LearnRaise(asOf, now, h)
	rs.raise(l, now, r)
}

func (rs *redisState) exhausted(l *limit.Limiter, until time.Time, tokens int64) {
	rs.raise(l, time.Now(), l.ExhaustedRaise(until, tokens))
}

// raise applies r on the mirror l, and in Redis when it raised the mirror:
// the mirror is Redis's state as of its latest reply, so floors it already
// meets need no round trip (most answers' headers teach nothing new).
func (rs *redisState) raise(l *limit.Limiter, now time.Time, r limit.Raise) {
	if !l.ApplyRaise(now, r) || rs.down.Load() {
		return
	}
	m := rs.mirrorOf(l)
	if m == nil {
		return
	}
	// Raise's times are ours; Redis keeps its own clock.
	off := int64(rs.lim.Offset())
	for _, t := range []*int64{&r.ReqTAT, &r.TokTAT, &r.Cool} {
		if *t > 0 {
			*t += off
		}
	}
	lim := l.Limits()
	rs.later(func(ctx context.Context) {
		st, err := rs.lim.Raise(ctx, m.id, lim, r)
		if err != nil {
			rs.failed(err)
			return
		}
		rs.mu.Lock()
		if !rs.down.Load() {
			rs.setMirror(m, st)
		}
		rs.mu.Unlock()
	})
}

// lift ends the cool-down in Redis and on the mirror.
func (rs *redisState) lift(l *limit.Limiter) {
	l.CoolDown(time.Time{})
	m := rs.mirrorOf(l)
	if m == nil || rs.down.Load() {
		return
	}
	err := rs.call(func(ctx context.Context) error {
		st, err := rs.lim.Lift(ctx, m.id)
		if err == nil {
			rs.mu.Lock()
			rs.setMirror(m, st)
			rs.mu.Unlock()
		}
		return err
	})
	rs.failed(err)
}
