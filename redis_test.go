package openairelay

import (
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redistest"
)

// testRedisState is one instance's shared state on the Redis at addrs.
func testRedisState(t *testing.T, prefix string, onError string, addrs ...string) *redisState {
	t.Helper()
	s := &StateConfig{Store: "redis", Addresses: addrs, Prefix: prefix, OnError: onError, Timeout: caddy.Duration(100 * time.Millisecond)}
	repl := caddy.NewReplacer()
	if err := s.provision(repl); err != nil {
		t.Fatal(err)
	}
	opts, err := s.options(caddy.Context{}, repl)
	if err != nil {
		t.Fatal(err)
	}
	rs := newRedisState(opts, s.Prefix, time.Duration(s.Timeout), s.OnError == onErrorReject, zap.NewNop())
	t.Cleanup(func() { _ = rs.Destruct() })
	return rs
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisStateSharesLimits runs two instances on one key: together they
// admit what one limiter admits, and a release on one is room on the other.
func TestRedisStateSharesLimits(t *testing.T) {
	srv := redistest.Start(t)
	a := testRedisState(t, "lim", "", srv.Addr())
	b := testRedisState(t, "lim", "", srv.Addr())
	lim := Limits{RPM: 600, MaxConcurrent: 3, Burst: caddy.Duration(time.Second)}
	la, lb := a.load("key:k", lim), b.load("key:k", lim)
	a.sync()
	b.sync()

	// max_concurrent 3 across both: the fourth is refused wherever it goes.
	var held []reservation
	var stores []*redisState
	for i, rs := range []*redisState{a, b, a} {
		l := []*limit.Limiter{la, lb, la}[i]
		r, ok := rs.reserve(time.Now(), 10, l, nil)
		if !ok {
			t.Fatalf("reservation %d refused", i)
		}
		held, stores = append(held, r), append(stores, rs)
	}
	if _, ok := b.reserve(time.Now(), 10, lb, nil); ok {
		t.Fatal("a fourth request in flight was admitted on a key of max_concurrent 3")
	}
	if got := lb.State().InFlight; got != 3 {
		t.Fatalf("b's mirror sees %d in flight, want 3", got)
	}
	// a settles one: b gets the slot once the settle has gone through.
	stores[0].settle(&held[0], time.Now(), 5)
	eventually(t, "slot released by a usable on b", func() bool {
		r, ok := b.reserve(time.Now(), 10, lb, nil)
		if ok {
			held[0], stores[0] = r, b
		}
		return ok
	})
	for i := range held {
		stores[i].cancel(&held[i], time.Now())
	}
	eventually(t, "all slots back", func() bool {
		a.refreshMirrors(t.Context())
		return la.State().InFlight == 0
	})
}

// TestRedisStateRate checks that two instances reserving as fast as they
// can on one key admit, together, what its bucket holds.
func TestRedisStateRate(t *testing.T) {
	srv := redistest.Start(t)
	a := testRedisState(t, "rate", "", srv.Addr())
	b := testRedisState(t, "rate", "", srv.Addr())
	lim := Limits{RPM: 60, Burst: caddy.Duration(5 * time.Second)} // 5 requests at once
	la, lb := a.load("key:k", lim), b.load("key:k", lim)
	admitted := 0
	for range 20 {
		for _, p := range []struct {
			rs *redisState
			l  *limit.Limiter
		}{{a, la}, {b, lb}} {
			if r, ok := p.rs.reserve(time.Now(), 0, p.l, nil); ok {
				admitted++
				p.rs.settle(&r, time.Now(), 0)
			}
		}
	}
	// 5 of burst, and at most one more refilled while the loop ran.
	if admitted < 5 || admitted > 6 {
		t.Fatalf("two instances admitted %d requests on a key whose bucket holds 5", admitted)
	}
}

// TestRedisStateHealth checks that a key retired on one instance is
// retired on the other, and restored likewise.
func TestRedisStateHealth(t *testing.T) {
	srv := redistest.Start(t)
	a := testRedisState(t, "health", "", srv.Addr())
	b := testRedisState(t, "health", "", srv.Addr())
	ka, kb := &keyState{}, &keyState{}
	ka.describe(keyInfo{id: "k", poolID: "up#1"})
	kb.describe(keyInfo{id: "k", poolID: "up#1"})
	a.track("up#1", ka)
	b.track("up#1", kb)
	time.Sleep(100 * time.Millisecond) // the subscriptions are made
	a.retire(ka, "invalid_api_key", time.Now(), time.Minute)
	eventually(t, "retirement seen by b", kb.retired)
	if got := kb.health().reason; got != "invalid_api_key" {
		t.Fatalf("b sees reason %q", got)
	}
	// Only one instance probes it.
	later := time.Now().Add(2 * time.Minute)
	first, second := a.probeDue(ka, later), b.probeDue(kb, later)
	if first == second {
		t.Fatalf("probe claimed by a: %v, by b: %v; want exactly one", first, second)
	}
	a.restoreManually(ka)
	eventually(t, "restore seen by b", func() bool { return !kb.retired() })
}

// TestRedisStateSpend checks that a budget holds across instances.
func TestRedisStateSpend(t *testing.T) {
	srv := redistest.Start(t)
	a := testRedisState(t, "spend", "", srv.Addr())
	b := testRedisState(t, "spend", "", srv.Addr())
	ca, cb := &clientState{}, &clientState{}
	ca.set("client:c@p", "c", "normal", nil, nil)
	cb.set("client:c@p", "c", "normal", nil, nil)
	now := time.Now()
	ha, ok := a.reserveSpend(ca, now, "daily", 1.0, 0.6)
	if !ok {
		t.Fatal("first reservation refused")
	}
	hb, ok := b.reserveSpend(cb, now, "daily", 1.0, 0.6)
	if !ok {
		t.Fatal("second reservation refused: 0.6 reserved is under the budget")
	}
	if _, ok := b.reserveSpend(cb, now, "daily", 1.0, 0.1); ok {
		t.Fatal("1.2 reserved of a budget of 1: a third reservation was admitted")
	}
	a.addSpend(ca, now, 0.5)
	a.releaseSpend(ca, ha, 0.6)
	b.releaseSpend(cb, hb, 0.6)
	// The spend and the releases reach Redis off the callers' paths: wait
	// for each, giving back every probe that was admitted.
	eventually(t, "spend of a seen by b", func() bool {
		h, ok := b.reserveSpend(cb, time.Now(), "daily", 0.5, 0.01)
		if ok {
			b.releaseSpend(cb, h, 0.01)
		}
		return !ok && cb.spent("daily", time.Now()) >= 0.5
	})
	eventually(t, "0.5 spent of 1 admitting 0.1 once the reservations are released", func() bool {
		h, ok := b.reserveSpend(cb, time.Now(), "daily", 1.0, 0.1)
		if ok {
			b.releaseSpend(cb, h, 0.1)
		}
		return ok
	})
}

// TestRedisStateObjects checks that an object recorded by one instance
// belongs to its creator on the other.
func TestRedisStateObjects(t *testing.T) {
	srv := redistest.Start(t)
	a := testRedisState(t, "obj", "", srv.Addr())
	b := testRedisState(t, "obj", "", srv.Addr())
	id := "file-redisstatetest" + time.Now().Format("150405.000000")[7:]
	a.objects().remember(id, "up#1", "client:c@p", time.Unix(1700000000, 0))
	// a and b share objectOwners in this process: b reads Redis only for
	// what it lacks.
	objectOwners.forget(id)
	rec, ok := b.objects().get(id)
	if !ok || rec.owner != "client:c@p" || rec.key != "up#1" || rec.created != 1700000000 {
		t.Fatalf("b's record: %+v, %v", rec, ok)
	}
	objectOwners.forget(id)
}

// TestRedisStateOutage stops Redis: on_error local serves from the local
// share at once and never waits much longer than the timeout; on_error
// reject refuses; both go back to Redis once it answers.
func TestRedisStateOutage(t *testing.T) {
	srv := redistest.Start(t)
	local := testRedisState(t, "out", "", srv.Addr())
	reject := testRedisState(t, "out", "reject", srv.Addr())
	lim := Limits{RPM: 6000, Burst: caddy.Duration(time.Second)}
	ll, lr := local.load("key:k", lim), reject.load("key:k", lim)
	local.sync()
	reject.sync()
	eventually(t, "both instances seen alive", func() bool { return local.alive.Load() == 2 || local.beat(t.Context()) && local.alive.Load() == 2 })

	srv.Stop()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			start := time.Now()
			r, ok := local.reserve(time.Now(), 1, ll, nil)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("a reservation with Redis down took %v", d)
			}
			if ok {
				local.settle(&r, time.Now(), 1)
			}
		})
	}
	wg.Wait()
	// A failed call has Redis pinged; the failed ping means local mode.
	eventually(t, "local mode after Redis stopped", local.down.Load)
	if got := ll.Limits().RPM; got != 3000 {
		t.Fatalf("local share of RPM 6000 between 2 instances: %d", got)
	}
	if _, ok := local.reserve(time.Now(), 1, ll, nil); !ok {
		t.Fatal("on_error local refused a request")
	}
	reject.reserve(time.Now(), 1, lr, nil)
	eventually(t, "on_error reject refusing with Redis down", reject.unavailable)

	srv.Restart()
	eventually(t, "back on Redis", func() bool { return !local.down.Load() && !reject.down.Load() })
	if got := ll.Limits().RPM; got != 6000 {
		t.Fatalf("RPM back on Redis: %d", got)
	}
	if _, ok := reject.reserve(time.Now(), 1, lr, nil); !ok {
		t.Fatal("refused after Redis came back")
	}
}
