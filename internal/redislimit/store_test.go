package redislimit

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// admission is one reservation the concurrency test got.
type admission struct {
	at     time.Time
	tokens int64
}

// TestConcurrentInstances runs several instances, each with its own client,
// reserving on one key as fast as the key allows: in no window is more
// admitted than the key's limits allow, and the key's capacity is used.
func TestConcurrentInstances(t *testing.T) {
	const (
		rpm, tpm  = 6000, 600000 // 100 requests and 10000 tokens a second
		instances = 4
	)
	run := 3 * time.Second
	if testing.Short() {
		run = time.Second
	}
	tau := limit.DefaultBurst
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := prefix(t)
			item := []Item{{ID: "key", Limits: limit.Limits{RPM: rpm, TPM: tpm}}}
			var mu sync.Mutex
			var got []admission
			var wg sync.WaitGroup
			errs := make(chan error, instances)
			for i := range instances {
				store := New(b.client(t), p)
				wg.Go(func() {
					c := ctx(t, run+10*time.Second)
					end := time.Now().Add(run)
					n := int64(50 + 25*i) // instances ask 50 to 125 tokens
					for time.Now().Before(end) {
						r, _, retry, ok, err := store.Reserve(c, n, item, time.Minute)
						if err != nil {
							errs <- err
							return
						}
						if !ok {
							wait := retry.Sub(time.Now().Add(store.Offset()))
							time.Sleep(min(max(wait, 0), 50*time.Millisecond))
							continue
						}
						mu.Lock()
						got = append(got, admission{r.At, n})
						mu.Unlock()
						if _, err := store.Settle(c, r, n); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b admission) int { return a.at.Compare(b.at) })
			// GCRA: what n admissions within a window w cost never exceeds
			// w plus the bucket's burst.
			reqCost := time.Minute / rpm
			tokCost := func(n int64) time.Duration { return time.Duration(n) * time.Minute / tpm }
			for _, w := range []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second, 2 * time.Second} {
				j := 0
				var toks int64
				worst := 0.0
				for i := range got {
					for j < len(got) && got[j].at.Sub(got[i].at) <= w {
						toks += got[j].tokens
						j++
					}
					reqs := time.Duration(j-i) * reqCost
					if reqs > w+tau || tokCost(toks) > w+tau {
						t.Fatalf("window %v from %v: %d requests (%v) and %d tokens (%v), allowed %v", w, got[i].at, j-i, reqs, toks, tokCost(toks), w+tau)
					}
					worst = max(worst, float64(max(reqs, tokCost(toks)))/float64(w+tau))
					toks -= got[i].tokens
				}
				t.Logf("window %v: at most %.1f%% of the limit", w, 100*worst)
			}
			if len(got) == 0 {
				t.Fatal("nothing admitted")
			}
			span := got[len(got)-1].at.Sub(got[0].at) + tau
			var toks int64
			for _, a := range got {
				toks += a.tokens
			}
			used := float64(max(time.Duration(len(got))*reqCost, tokCost(toks))) / float64(span)
			t.Logf("%d requests, %d tokens in %v: %.1f%% of capacity", len(got), toks, span, 100*used)
			if used < 0.9 {
				t.Errorf("used %.1f%% of capacity, want at least 90%%", 100*used)
			}
		})
	}
}

// TestLeases checks that requests in flight of an instance that stops
// renewing them (a dead one) give their slots back after the lease TTL,
// and that renewed ones hold theirs.
func TestLeases(t *testing.T) {
	// Long enough that a renewal every 250ms never misses it on a loaded
	// machine under the race detector (1s did once in CI).
	const ttl = 3 * time.Second
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := prefix(t)
			dead, other := New(b.client(t), p), New(b.client(t), p)
			c := ctx(t, 30*time.Second)
			item := []Item{{ID: "key", Limits: limit.Limits{MaxConcurrent: 2}}}
			reserve := func(s *Store, want bool) *Reservation {
				t.Helper()
				r, states, retry, ok, err := s.Reserve(c, 0, item, ttl)
				if err != nil {
					t.Fatal(err)
				}
				if ok != want || (!ok && !retry.IsZero()) {
					t.Fatalf("Reserve = %v (retry %v, in flight %d), want %v", ok, retry, states[0].InFlight, want)
				}
				return r
			}
			renewed, abandoned := reserve(dead, true), reserve(dead, true)
			reserve(other, false)
			for range 15 { // 3.75s: abandoned expires, renewed does not
				time.Sleep(250 * time.Millisecond)
				if live, err := dead.Renew(c, []*Reservation{renewed}, ttl); err != nil || !live[0] {
					t.Fatalf("Renew = %v, %v", live, err)
				}
			}
			if live, err := dead.Renew(c, []*Reservation{renewed, abandoned, nil}, ttl); err != nil || !slices.Equal(live, []bool{true, false, false}) {
				t.Fatalf("Renew = %v, %v; want the renewed one live, the abandoned one gone", live, err)
			}
			reserve(other, true)
			reserve(other, false)
			time.Sleep(ttl + 300*time.Millisecond) // the instance died: renewed expires too (and other's)
			reserve(other, true)
			reserve(other, true)
			states, err := dead.Settle(c, renewed, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := states[0].InFlight; got != 2 {
				t.Errorf("in flight after settling an expired lease = %d, want 2 (the other instance's)", got)
			}
		})
	}
}

// TestRetriedReserve replays a reserve script call, as a client retrying
// after a lost reply does: it takes nothing twice.
func TestRetriedReserve(t *testing.T) {
	srv := redistest.Start(t)
	s := New(closing(t, redis.NewClient(&redis.Options{Addr: srv.Addr()})), prefix(t))
	c := ctx(t, 10*time.Second)
	items := []Item{{ID: "key", Limits: limit.Limits{RPM: 600, TPM: 60000}}, {ID: "client", Limits: limit.Limits{RPM: 60}}}
	_, keys, args := s.reserveCall("rid", 100, items, time.Minute, true)
	first, err := s.run(c, reserveScript, keys, args...)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.run(c, reserveScript, keys, args...)
	if err != nil {
		t.Fatal(err)
	}
	// Same decision and costs; the states differ only in their time.
	head := 3 + 5*len(items)
	first[1], again[1] = 0, 0
	for i := range items {
		first[head+i*stateLen], again[head+i*stateLen] = 0, 0
	}
	if !slices.Equal(first, again) {
		t.Errorf("replay %v, first %v", again, first)
	}
	r := &Reservation{ID: "rid", ids: []string{"key", "client"}}
	for range 2 {
		r.done = false // as if the first Settle's reply was lost
		if _, err := s.Settle(c, r, 50); err != nil {
			t.Fatal(err)
		}
	}
	states, err := s.Load(c, []string{"key", "client"})
	if err != nil {
		t.Fatal(err)
	}
	if got := states[0]; got.RequestsToday != 1 || got.TokensToday != 50 || got.InFlight != 0 || got.Tok.Pending != 0 {
		t.Errorf("after a replayed reserve and settle: %+v", got)
	}
}

func TestRestoreDaily(t *testing.T) {
	srv := redistest.Start(t)
	s := New(closing(t, redis.NewClient(&redis.Options{Addr: srv.Addr()})), prefix(t))
	c := ctx(t, 10*time.Second)
	mem := limit.NewLimiter(limit.Limits{})
	for i, d := range []limit.DailyState{
		{Day: "2025-03-01", Requests: 5, Tokens: 50},
		{Day: "2025-03-01", Requests: 3, Tokens: 80}, // same day: the larger of each
		{Day: "2025-02-28", Requests: 9, Tokens: 90}, // earlier: ignored
		{Day: "2025-03-02", Requests: 1, Tokens: 10}, // later: replaces
	} {
		st, err := s.RestoreDaily(c, "key", d)
		if err != nil {
			t.Fatal(err)
		}
		mem.RestoreDaily(d)
		want := mem.State()
		if st.Day != want.Day || st.RequestsToday != want.RequestsToday || st.TokensToday != want.TokensToday {
			t.Errorf("%d: %+v: store day %d %d/%d, memory %d %d/%d", i, d, st.Day, st.RequestsToday, st.TokensToday, want.Day, want.RequestsToday, want.TokensToday)
		}
	}
	if _, err := s.RestoreDaily(c, "key", limit.DailyState{Day: "yesterday"}); err == nil {
		t.Error("a malformed day: no error")
	}
}

// TestErrors checks that a dead or unresponsive Redis is an error, within
// the context's deadline.
func TestErrors(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // accepts, never answers
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	for _, tt := range []struct{ name, addr string }{
		{"stopped", srv.Addr()},
		{"unresponsive", ln.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(closing(t, redis.NewClient(&redis.Options{Addr: tt.addr, ContextTimeoutEnabled: true, MaxRetries: -1})), prefix(t))
			c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, _, _, _, err := s.Reserve(c, 1, []Item{{ID: "key", Limits: limit.Limits{RPM: 60}}}, time.Minute)
			if err == nil {
				t.Fatal("no error")
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v, past the context's 300ms", d)
			}
			if tt.name == "unresponsive" && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				t.Errorf("error %v, want a timeout", err)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestRestart checks that the store works on after Redis restarts empty:
// its scripts are loaded again (EVALSHA falls back to EVAL on NOSCRIPT),
// and the state starts afresh.
func TestRestart(t *testing.T) {
	srv := redistest.Start(t)
	s := New(closing(t, redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})), prefix(t))
	c := ctx(t, 10*time.Second)
	item := []Item{{ID: "key", Limits: limit.Limits{RPM: 60}}}
	if _, _, _, ok, err := s.Reserve(c, 0, item, time.Minute); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	if _, _, _, ok, err := s.Reserve(c, 0, item, time.Minute); err != nil || ok {
		t.Fatalf("second Reserve = %v, %v; want refused at 60 RPM", ok, err)
	}
	srv.Restart()
	var err error
	for range 3 { // a pooled connection to the old server may fail once
		var ok bool
		if _, _, _, ok, err = s.Reserve(c, 0, item, time.Minute); err == nil {
			if !ok {
				t.Fatal("refused after a restart: the state should be empty")
			}
			return
		}
	}
	t.Fatalf("Reserve after restart: %v", err)
}
