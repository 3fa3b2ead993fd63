package openairelay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redislimit"
)

// redisState is the stateStore of a config with `state redis`: instances
// that name the same Redis and prefix share it (design §8). Limits are
// reserved in Redis (internal/redislimit) in one round trip and settled off
// the request's path; what selection reads stays local, in mirrors that
// every reply, a periodic read and pub/sub refresh. While Redis does not
// answer, on_error local serves from the mirrors with this instance's share
// of every limit, and on_error reject refuses requests (unavailable).
//
// One redisState serves every config naming the same Redis settings (it
// lives in redisStates), so a reload keeps its mirrors and connections.
type redisState struct {
	client   redis.UniversalClient
	lim      *redislimit.Store
	prefix   string
	tag      string // "{prefix}": every key starts with it (one Cluster slot)
	instance string // this process's random name among the instances
	timeout  time.Duration
	reject   bool // on_error reject
	logger   *zap.Logger

	mu       sync.Mutex
	mirrors  map[string]*mirror // by limiter id
	byLim    map[*limit.Limiter]*mirror
	keys     map[string]*trackedKey // key health, by pool id
	live     map[*sharedReservation]struct{}
	spendAt  map[*clientState][2]float64 // spend (day, month) when local mode began
	objectsT *redisObjects

	// down is set while Redis does not answer; alive is the instances seen
	// alive in the last minute (at least 1), the divisor of the local share.
	down  atomic.Bool
	alive atomic.Int64

	check      chan error    // a call failed: ping Redis now
	ops        chan finishOp // settling, retiming and cancelling, in order
	background chan func(context.Context)
	stop       context.CancelFunc
	done       sync.WaitGroup
}

// mirror is the local copy of one shared limiter.
type mirror struct {
	id   string
	l    *limit.Limiter
	conf limit.Limits // configured (the limiter's own may be a local share)
	refs int
	// raw is the latest state Redis gave, in Redis's clock (the limiter
	// holds it in ours), to tell a release from what time alone does.
	raw limit.State
}

// sharedReservation is what one reserve took in Redis (r), or, in local
// mode, on the mirrors (r nil, the reservation's local Multi).
type sharedReservation struct {
	r       *redislimit.Reservation
	mirrors []*mirror
}

// finishOp is a reservation's next step, for the finisher.
type finishOp struct {
	sr     *sharedReservation
	what   string
	actual int64
}

const (
	// leaseTTL is how long a request's concurrency lease outlives its
	// instance; renewed every leaseTTL/3 while the request runs.
	leaseTTL = 15 * time.Second
	// mirrorRefresh is how often every mirror is read from Redis, for the
	// reservations of other instances.
	mirrorRefresh = 200 * time.Millisecond
	// heartbeat is how often an instance records itself alive; aliveWindow
	// is how long one counts as alive after.
	heartbeat   = 5 * time.Second
	aliveWindow = time.Minute
	// healthRefresh is how often every key's health is read, in case a
	// pub/sub message was lost.
	healthRefresh = 5 * time.Second
	// finishBatch bounds the ops of one pipeline.
	finishBatch = 256
)

// redisStates are the redisStates of the loaded configs, by their settings.
var redisStates = caddy.NewUsagePool()

// stateModeGauge says which mode each shared state is in: 1 for the mode it
// is in, 0 for the others.
var stateModeGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Namespace: "caddy",
	Subsystem: "openai_relay",
	Name:      "state_mode",
	Help:      "Where limits are kept: redis (shared), local (Redis unreachable, this instance's share) or reject (Redis unreachable, requests refused).",
}, []string{"mode"})

// redisLogger sends go-redis's own messages (failed dials, pub/sub
// reconnections) to Caddy's log at debug level: the relay logs what matters
// (leaving and rejoining Redis) itself, and go-redis would otherwise write
// to stderr on every failed dial while Redis is down.
type redisLogger struct{ l *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := r.l.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, v...)))
	}
}

var setRedisLogger sync.Once

// newRedisState connects to Redis (without waiting for it) and starts the
// workers, which live until the last config using the state is unloaded.
func newRedisState(opts *redis.UniversalOptions, prefix string, timeout time.Duration, reject bool, logger *zap.Logger) *redisState {
	setRedisLogger.Do(func() { redis.SetLogger(redisLogger{caddy.Log().Named("openai_relay.redis")}) })
	c := redis.NewUniversalClient(opts)
	var b [8]byte
	_, _ = rand.Read(b[:])
	rs := &redisState{
		client:     c,
		lim:        redislimit.New(c, prefix),
		prefix:     prefix,
		tag:        "{" + prefix + "}",
		instance:   hex.EncodeToString(b[:]),
		timeout:    timeout,
		reject:     reject,
		logger:     logger,
		mirrors:    make(map[string]*mirror),
		byLim:      make(map[*limit.Limiter]*mirror),
		keys:       make(map[string]*trackedKey),
		live:       make(map[*sharedReservation]struct{}),
		check:      make(chan error, 1),
		ops:        make(chan finishOp, 4096),
		background: make(chan func(context.Context), 1024),
	}
	rs.objectsT = &redisObjects{rs: rs, local: objectOwners}
	rs.alive.Store(1)
	rs.setModeGauge()
	ctx, stop := context.WithCancel(context.Background())
	rs.stop = stop
	rs.done.Add(5)
	go rs.watchdog(ctx)
	go rs.finisher(ctx)
	go rs.refresher(ctx)
	go rs.backgroundWorker(ctx)
	go rs.subscriber(ctx)
	return rs
}

// Destruct implements caddy.Destructor: the last config using the state is
// gone. What is still to be settled is sent first.
func (rs *redisState) Destruct() error {
	rs.stop()
	rs.done.Wait()
	return rs.client.Close()
}

// call runs f with the request-path timeout.
func (rs *redisState) call(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), rs.timeout)
	defer cancel()
	return f(ctx)
}

// key names a key of this state.
func (rs *redisState) key(kind, id string) string { return rs.tag + ":" + kind + ":" + id }

// failed notes that a call to Redis failed: the watchdog pings Redis at
// once, and only a failed ping puts the instance in local (or reject)
// mode. One slow answer on a loaded machine is not an outage; treating it
// as one would have this instance reserve on its own share while the
// others still use the whole limits in Redis.
func (rs *redisState) failed(err error) {
	if err == nil || rs.down.Load() {
		return
	}
	select {
	case rs.check <- err:
	default:
	}
}

// goLocal puts the instance in local (or reject) mode: Redis did not
// answer a ping.
func (rs *redisState) goLocal(err error) {
	if rs.down.Swap(true) {
		return
	}
	rs.enterLocal()
	rs.logger.Error("Redis is unreachable: limits are no longer shared",
		zap.String("mode", rs.mode()), zap.Int64("instances_alive", rs.alive.Load()), zap.Error(err))
	rs.setModeGauge()
	capacityReleased()
}

// unavailable reports whether requests are to be refused: Redis does not
// answer and on_error is reject.
func (rs *redisState) unavailable() bool { return rs.reject && rs.down.Load() }

// mode is where limits are kept now: redis, local or reject.
func (rs *redisState) mode() string {
	switch {
	case !rs.down.Load():
		return "redis"
	case rs.reject:
		return "reject"
	}
	return "local"
}

func (rs *redisState) setModeGauge() {
	mode := rs.mode()
	for _, m := range []string{"redis", "local", "reject"} {
		v := 0.0
		if m == mode {
			v = 1
		}
		stateModeGauge.WithLabelValues(m).Set(v)
	}
}

// enterLocal turns every mirror into a local limiter with this instance's
// share of the limits: limit/N for N instances seen alive, and of the day
// counters' remainder. Requests in flight are forgotten (each instance
// counts its own from now on), and what was consumed stays consumed.
func (rs *redisState) enterLocal() {
	n := max(rs.alive.Load(), 1)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, m := range rs.mirrors {
		st := m.l.State()
		m.l.SetLimits(localShare(m.l.Limits(), st, n))
		st = m.l.State()
		st.InFlight = 0
		m.l.SetState(st)
	}
	rs.spendAt = make(map[*clientState][2]float64)
}

// localShare is one instance's share of lim among n: the rates divided, and
// of each day counter what is left today divided.
func localShare(lim limit.Limits, st limit.State, n int64) limit.Limits {
	div := func(v int64) int64 {
		if v <= 0 {
			return v
		}
		return max(v/n, 1)
	}
	day := func(v, used int64) int64 {
		if v <= 0 {
			return v
		}
		return used + max(v-used, 0)/n
	}
	lim.RPM, lim.TPM, lim.MaxConcurrent = div(lim.RPM), div(lim.TPM), div(lim.MaxConcurrent)
	lim.RPD, lim.TPD = day(lim.RPD, st.RequestsToday), day(lim.TPD, st.TokensToday)
	return lim
}

// leaveLocal goes back to Redis: the mirrors get their configured limits
// and Redis's state again. It reports whether Redis answered.
func (rs *redisState) leaveLocal(ctx context.Context) bool {
	if err := rs.client.Ping(ctx).Err(); err != nil {
		return false
	}
	ms := rs.mirrorList()
	states, err := rs.loadStates(ctx, ms)
	if err != nil {
		return false
	}
	rs.mu.Lock()
	for i, m := range ms {
		m.l.SetLimits(m.conf)
		rs.setMirror(m, states[i])
	}
	rs.spendAt = nil
	rs.mu.Unlock()
	rs.down.Store(false)
	rs.setModeGauge()
	rs.logger.Info("Redis answers again: limits are shared")
	capacityReleased()
	return true
}

// mirrorList is every mirror, at this moment.
func (rs *redisState) mirrorList() []*mirror {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	ms := make([]*mirror, 0, len(rs.mirrors))
	for _, m := range rs.mirrors {
		ms = append(ms, m)
	}
	return ms
}

// setMirror loads a state Redis gave into m, and reports whether it holds
// capacity given back since the previous one (a request ended, tokens
// returned, a cool-down lifted, a limit or a new day): what time alone
// frees, the waiters' retry times already cover. Called with rs.mu held.
func (rs *redisState) setMirror(m *mirror, st limit.State) (released bool) {
	old := m.raw
	m.raw = st
	m.l.SetState(rs.localTime(st))
	return st.InFlight < old.InFlight || st.Req.TAT < old.Req.TAT || st.Tok.TAT < old.Tok.TAT ||
		st.Cool < old.Cool || st.Req.Limit > old.Req.Limit || st.Tok.Limit > old.Tok.Limit || st.Day > old.Day ||
		st.RequestsToday < old.RequestsToday || st.TokensToday < old.TokensToday
}

// loadStates reads the mirrors' states from Redis.
func (rs *redisState) loadStates(ctx context.Context, ms []*mirror) ([]limit.State, error) {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.id
	}
	return rs.lim.Load(ctx, ids)
}

// localTime moves a state from Redis's clock to this process's, which the
// mirrors are read with.
func (rs *redisState) localTime(st limit.State) limit.State {
	off := int64(rs.lim.Offset())
	shift := func(v int64) int64 {
		if v == 0 {
			return 0
		}
		return v - off
	}
	st.At = shift(st.At)
	st.Req.TAT, st.Req.Sent = shift(st.Req.TAT), shift(st.Req.Sent)
	st.Tok.TAT, st.Tok.Sent = shift(st.Tok.TAT), shift(st.Tok.Sent)
	st.Cool = shift(st.Cool)
	return st
}

// finisher sends settles, retimes and cancels in pipelines, and renews the
// leases of requests in flight. It alone touches a Reservation after
// reserve, so their flags need no lock.
func (rs *redisState) finisher(ctx context.Context) {
	defer rs.done.Done()
	renew := time.NewTicker(leaseTTL / 3)
	defer renew.Stop()
	batch := make([]finishOp, 0, finishBatch)
	for {
		select {
		case op := <-rs.ops:
			batch = append(batch[:0], op)
		fill:
			for len(batch) < finishBatch {
				select {
				case op := <-rs.ops:
					batch = append(batch, op)
				default:
					break fill
				}
			}
			rs.finish(batch)
		case <-renew.C:
			rs.renew()
		case <-ctx.Done():
			for {
				select {
				case op := <-rs.ops:
					rs.finish([]finishOp{op})
				default:
					return
				}
			}
		}
	}
}

// finish runs one batch of ops and refreshes the mirrors from the replies.
func (rs *redisState) finish(batch []finishOp) {
	ops := make([]redislimit.Op, len(batch))
	for i, op := range batch {
		ops[i] = redislimit.Op{R: op.sr.r, What: op.what, Actual: op.actual}
	}
	var results []redislimit.Result
	if !rs.down.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*rs.timeout)
		results = rs.lim.Finish(ctx, ops)
		cancel()
	}
	rs.mu.Lock()
	for i, op := range batch {
		if op.what != "retime" {
			delete(rs.live, op.sr)
		}
		if results == nil {
			continue
		}
		if err := results[i].Err; err != nil {
			// Its leases expire in Redis; its tokens stay reserved there.
			rs.logger.Debug("could not settle a reservation in Redis", zap.Error(err))
			continue
		}
		for j, st := range results[i].States {
			rs.setMirror(op.sr.mirrors[j], st)
		}
	}
	rs.mu.Unlock()
	for _, res := range results {
		if res.Err != nil {
			rs.failed(res.Err)
			break
		}
	}
	capacityReleased()
}

// renew extends the leases of the requests in flight.
func (rs *redisState) renew() {
	if rs.down.Load() {
		return
	}
	rs.mu.Lock()
	rsv := make([]*redislimit.Reservation, 0, len(rs.live))
	for sr := range rs.live {
		rsv = append(rsv, sr.r)
	}
	rs.mu.Unlock()
	if len(rsv) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*rs.timeout)
	defer cancel()
	if _, err := rs.lim.Renew(ctx, rsv, leaseTTL); err != nil {
		rs.logger.Debug("could not renew leases in Redis", zap.Error(err))
	}
}

// refresher reads every mirror from Redis, records the instance alive,
// and while Redis is down tries it again.
func (rs *redisState) refresher(ctx context.Context) {
	defer rs.done.Done()
	tick := time.NewTicker(mirrorRefresh)
	defer tick.Stop()
	var lastBeat, lastHealth time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if rs.down.Load() {
				c, cancel := context.WithTimeout(ctx, 4*rs.timeout)
				back := rs.leaveLocal(c)
				cancel()
				if !back {
					// Requests whose reservation failed as Redis went
					// away wait for a release; local mode is one.
					capacityReleased()
					continue
				}
				lastBeat, lastHealth = time.Time{}, time.Time{}
			}
			// A failed step ends the round: the watchdog is checking.
			if now.Sub(lastBeat) >= heartbeat {
				if !rs.beat(ctx) {
					continue
				}
				lastBeat = now
			}
			if now.Sub(lastHealth) >= healthRefresh {
				if !rs.refreshHealth(ctx) {
					continue
				}
				lastHealth = now
			}
			rs.refreshMirrors(ctx)
		}
	}
}

// refreshMirrors reads every mirror's state from Redis, and wakes the
// queues when another instance gave capacity back. It reports whether
// Redis answered.
func (rs *redisState) refreshMirrors(ctx context.Context) bool {
	ms := rs.mirrorList()
	if len(ms) == 0 {
		return true
	}
	c, cancel := context.WithTimeout(ctx, 4*rs.timeout)
	states, err := rs.loadStates(c, ms)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			rs.failed(err)
		}
		return false
	}
	released := false
	rs.mu.Lock()
	if !rs.down.Load() {
		for i, m := range ms {
			released = rs.setMirror(m, states[i]) || released
		}
	}
	rs.mu.Unlock()
	if released {
		capacityReleased()
	}
	return true
}

// watchdog pings Redis when a call failed, and puts the instance in
// local (or reject) mode when the ping fails too. It is a goroutine of its
// own so that the refresher's slow rounds never delay it.
func (rs *redisState) watchdog(ctx context.Context) {
	defer rs.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-rs.check:
			if rs.down.Load() {
				continue
			}
			c, cancel := context.WithTimeout(ctx, 2*rs.timeout)
			perr := rs.client.Ping(c).Err()
			cancel()
			if perr != nil && ctx.Err() == nil {
				rs.goLocal(fmt.Errorf("%w (after: %v)", perr, err))
			}
		}
	}
}

// beat records this instance alive and counts the instances alive.
func (rs *redisState) beat(ctx context.Context) bool {
	c, cancel := context.WithTimeout(ctx, 4*rs.timeout)
	defer cancel()
	key := rs.tag + ":instances"
	now := time.Now().UnixMilli()
	var card *redis.IntCmd
	_, err := rs.client.TxPipelined(c, func(p redis.Pipeliner) error {
		p.ZAdd(c, key, redis.Z{Score: float64(now), Member: rs.instance})
		p.ZRemRangeByScore(c, key, "-inf", "("+itoa(now-aliveWindow.Milliseconds()))
		card = p.ZCard(c, key)
		p.PExpire(c, key, 2*aliveWindow)
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			rs.failed(err)
		}
		return false
	}
	rs.alive.Store(max(card.Val(), 1))
	return true
}

// backgroundWorker runs the writes that need not hold a request (health,
// spend released or added), one at a time and in order.
func (rs *redisState) backgroundWorker(ctx context.Context) {
	defer rs.done.Done()
	for {
		select {
		case f := <-rs.background:
			rs.runBackground(f)
		case <-ctx.Done():
			for {
				select {
				case f := <-rs.background:
					rs.runBackground(f)
				default:
					return
				}
			}
		}
	}
}

func (rs *redisState) runBackground(f func(context.Context)) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*rs.timeout)
	defer cancel()
	f(ctx)
}

// later queues f for the background worker; with the queue full, f runs
// now rather than be lost.
func (rs *redisState) later(f func(context.Context)) {
	select {
	case rs.background <- f:
	default:
		rs.runBackground(f)
	}
}

// view is what the admin API shows of the state.
func (rs *redisState) view() stateView {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return stateView{Store: "redis", Prefix: rs.prefix, Mode: rs.mode(), InstancesAlive: rs.alive.Load(),
		Limiters: len(rs.mirrors), Keys: len(rs.keys), InFlight: len(rs.live)}
}

// objects implements stateStore.
func (rs *redisState) objects() objectStore { return rs.objectsT }

// Interface guards
var (
	_ stateStore       = (*redisState)(nil)
	_ caddy.Destructor = (*redisState)(nil)
)
