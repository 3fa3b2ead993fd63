package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// redisTimeout is the stores' per-call bound in tests: short, so that the tests with
// Redis stopped stay fast, yet far above a loopback round trip under -race.
const redisTimeout = 500 * time.Millisecond

// redisPrefix returns a prefix no other test uses.
func redisPrefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "test-" + hex.EncodeToString(b[:])
}

// redisClient returns a client of addr, closed when the test ends.
func redisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newTestRedis returns a store over c that reads Stats afresh on every call and is
// closed when the test ends.
func newTestRedis(t testing.TB, c redis.UniversalClient, prefix string, maxBytes, maxEntry int64) *Redis {
	r := NewRedis(c, prefix, maxBytes, maxEntry, redisTimeout)
	r.statsAge = 0
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// redisPair starts a server and returns two stores over it with one prefix, each
// with its own client: two relay instances.
func redisPair(t *testing.T, maxBytes, maxEntry int64) (*redistest.Server, *Redis, *Redis) {
	t.Helper()
	srv := redistest.Start(t)
	p := redisPrefix(t)
	a := newTestRedis(t, redisClient(t, srv.Addr()), p, maxBytes, maxEntry)
	b := newTestRedis(t, redisClient(t, srv.Addr()), p, maxBytes, maxEntry)
	return srv, a, b
}

// sameEntry reports whether two entries replay identically (a nil and an empty header
// are the same).
func sameEntry(a, b *Entry) bool {
	if a.Status != b.Status || a.Stream != b.Stream || !a.Stored.Equal(b.Stored) || !bytes.Equal(a.Body, b.Body) || len(a.Header) != len(b.Header) {
		return false
	}
	for k, vs := range a.Header {
		if strings.Join(vs, "\x00") != strings.Join(b.Header[k], "\x00") || len(vs) != len(b.Header[k]) {
			return false
		}
	}
	return true
}

// eventually polls cond until it holds, failing t after a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitResult is what one Wait returned.
type waitResult struct {
	e  *Entry
	ok bool
}

// goWait runs r.Wait for k in a goroutine, bounded by d.
func goWait(r *Redis, k Key, d time.Duration) <-chan waitResult {
	out := make(chan waitResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		e, ok := r.Wait(ctx, k)
		out <- waitResult{e, ok}
	}()
	return out
}

func TestRedisShared(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 1<<20, 0)
	stored := time.Unix(1700000000, 123456789)
	for i, e := range []*Entry{
		{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Openai-Model": {"gpt-4o-2024-08-06"}}, Body: []byte(`{"id":"x","choices":[]}`), Stored: stored},
		{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: []byte("data: {}\n\ndata: [DONE]\n\n"), Stream: true, Stored: stored},
		{Status: 201, Header: http.Header{"X-Multi": {"a", "b", ""}}, Body: []byte{0, 1, 2, 0xff}, Stored: stored},
		{Status: 204, Header: http.Header{}, Stored: stored},
	} {
		k := key(fmt.Sprint("shared", i))
		a.Set(ctx, k, e, time.Minute)
		got, ok := b.Get(ctx, k)
		if !ok {
			t.Fatalf("entry %d: miss on the other instance", i)
		}
		if !sameEntry(got, e) {
			t.Errorf("entry %d: got %+v, want %+v", i, got, e)
		}
	}
	// A zero Stored is stored as now.
	before := time.Now()
	a.Set(ctx, key("zero"), &Entry{Status: 200, Body: []byte("{}")}, 0)
	if got, ok := b.Get(ctx, key("zero")); !ok || got.Stored.Before(before.Truncate(time.Microsecond)) {
		t.Errorf("zero Stored: got %+v, %v; want Stored at least %v", got, ok, before)
	}
	if _, ok := b.Get(ctx, key("absent")); ok {
		t.Error("hit for a key never stored")
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.Entries != 5 || sb.Entries != 5 || sa.Bytes != sb.Bytes || sa.Bytes <= 0 {
		t.Errorf("shared Entries/Bytes: %+v and %+v, want 5 entries and equal bytes on both", sa, sb)
	}
	if sa.Hits != 0 || sb.Hits != 5 || sb.Misses != 1 {
		t.Errorf("per-instance counters: %+v and %+v, want 0 and 5 hits, 1 miss on the second", sa, sb)
	}
	if a.Errors() != 0 || b.Errors() != 0 {
		t.Errorf("errors %d, %d", a.Errors(), b.Errors())
	}
}

func TestRedisTTL(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 1<<20, 0)
	keep := entryOf(300)
	a.Set(ctx, key("got"), entryOf(400), 200*time.Millisecond)
	a.Set(ctx, key("swept"), entryOf(500), 200*time.Millisecond)
	a.Set(ctx, key("keep"), keep, 0)
	if _, ok := b.Get(ctx, key("got")); !ok {
		t.Fatal("entry with a TTL missing at once")
	}
	// The first leaves the counter when a Get meets it...
	eventually(t, "expiry seen by Get", func() bool {
		_, ok := b.Get(ctx, key("got"))
		return !ok
	})
	// Read directly: Stats would sweep the second entry too.
	if n := b.expired.Load(); n != 1 {
		t.Errorf("after the expired Get: %d expired, want 1", n)
	}
	// ...the second when a sweep finds it, here Stats's.
	eventually(t, "expiry swept", func() bool {
		st := a.Stats()
		return st.Entries == 1 && st.Bytes == keep.Size()
	})
	if st := a.Stats(); st.Expired != 1 {
		t.Errorf("after the sweep: %+v, want 1 expired on the sweeping instance", st)
	}
	if _, ok := a.Get(ctx, key("keep")); !ok {
		t.Error("entry without a TTL expired")
	}
	// A replacing Set without a TTL clears the old one.
	a.Set(ctx, key("re"), entryOf(300), 150*time.Millisecond)
	a.Set(ctx, key("re"), entryOf(300), 0)
	time.Sleep(300 * time.Millisecond)
	if _, ok := b.Get(ctx, key("re")); !ok {
		t.Error("entry replaced without a TTL expired with the old TTL")
	}
}

func TestRedisByteBound(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 1000, 0)
	// Recency is kept in microseconds; the pauses make the order of the steps
	// unambiguous however fast they run.
	step := func() { time.Sleep(2 * time.Millisecond) }
	for _, k := range []string{"a", "b", "c"} {
		a.Set(ctx, key(k), entryOf(300), 0)
		step()
	}
	if _, ok := b.Get(ctx, key("a")); !ok { // a is now the most recent, on both
		t.Fatal("a missing")
	}
	step()
	b.Set(ctx, key("d"), entryOf(300), 0) // 1200 > 1000: evicts b, the least recent
	step()
	for _, c := range []struct {
		k    string
		want bool
	}{{"a", true}, {"b", false}, {"c", true}, {"d", true}} {
		if _, ok := a.Get(ctx, key(c.k)); ok != c.want {
			t.Errorf("%s present %v, want %v", c.k, ok, c.want)
		}
		step()
	}
	if st := b.Stats(); st.Evictions != 1 || st.Entries != 3 || st.Bytes != 900 {
		t.Errorf("after d: %+v, want 1 eviction, 3 entries, 900 bytes", st)
	}
	b.Set(ctx, key("e"), entryOf(700), 0) // needs two evictions: a, then c
	if st := b.Stats(); st.Evictions != 3 || st.Entries != 2 || st.Bytes != 1000 {
		t.Errorf("after e: %+v, want 3 evictions, 2 entries, 1000 bytes", st)
	}
	// Filling from both instances keeps the global bound.
	const n = 30
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		s.Set(ctx, key(fmt.Sprint("fill", i)), entryOf(300), 0)
		if st := s.Stats(); st.Bytes > 1000 {
			t.Fatalf("after fill %d: %d bytes held, above 1000", i, st.Bytes)
		}
	}
	if st := a.Stats(); st.Entries != 3 || st.Bytes != 900 {
		t.Errorf("after filling: %+v, want the 3 newest", st)
	}
	for i := n - 3; i < n; i++ {
		if _, ok := a.Get(ctx, key(fmt.Sprint("fill", i))); !ok {
			t.Errorf("fill %d, among the newest, missing", i)
		}
	}
	// d, e and fills 0..26 were evicted, besides b, a and c.
	if got, want := a.Stats().Evictions+b.Stats().Evictions, uint64(3+2+n-3); got != want {
		t.Errorf("evictions on both instances: %d, want %d", got, want)
	}
}

func TestRedisDeclineDeletePurge(t *testing.T) {
	ctx := context.Background()
	srv, a, b := redisPair(t, 10000, 500)
	for _, tc := range []struct {
		name string
		run  func(k Key)
		want bool
	}{
		{"declined", func(k Key) { a.Set(ctx, k, entryOf(501), 0) }, false},
		{"largest", func(k Key) { a.Set(ctx, k, entryOf(500), 0) }, true},
		{"replaced by a declined one", func(k Key) {
			a.Set(ctx, k, entryOf(300), 0)
			a.Set(ctx, k, entryOf(600), 0)
		}, false},
		{"deleted", func(k Key) {
			a.Set(ctx, k, entryOf(300), time.Minute)
			b.Delete(ctx, k)
		}, false},
		{"deleted, absent", func(k Key) { b.Delete(ctx, k) }, false},
	} {
		k := key(tc.name)
		tc.run(k)
		if _, ok := b.Get(ctx, k); ok != tc.want {
			t.Errorf("%s: present %v, want %v", tc.name, ok, tc.want)
		}
	}
	if st := a.Stats(); st.Entries != 1 || st.Bytes != 500 {
		t.Errorf("stats %+v, want the largest alone", st)
	}

	// Another prefix on the same server is left alone by Purge, which goes in
	// batches.
	other := newTestRedis(t, redisClient(t, srv.Addr()), redisPrefix(t), 10000, 500)
	a.purgeBatch = 2
	for i := range 5 {
		a.Set(ctx, key(fmt.Sprint("p", i)), entryOf(200), time.Minute)
		other.Set(ctx, key(fmt.Sprint("p", i)), entryOf(200), 0)
	}
	a.Purge(ctx)
	if st := b.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after Purge: %+v, want nothing held", st)
	}
	for i := range 5 {
		if _, ok := b.Get(ctx, key(fmt.Sprint("p", i))); ok {
			t.Errorf("p%d survived Purge", i)
		}
		if _, ok := other.Get(ctx, key(fmt.Sprint("p", i))); !ok {
			t.Errorf("p%d of another prefix purged", i)
		}
	}
	if n, err := a.c.Exists(ctx, a.idx, a.sizes, a.bytes, a.exps).Result(); err != nil || n != 0 {
		t.Errorf("bookkeeping keys left after Purge: %d, %v", n, err)
	}
	if st := other.Stats(); st.Entries != 5 || st.Bytes != 1000 {
		t.Errorf("other prefix: %+v, want its 5 entries", st)
	}
	// The store works after a Purge.
	a.Set(ctx, key("after"), entryOf(300), 0)
	if _, ok := b.Get(ctx, key("after")); !ok || b.Stats().Bytes != 300 {
		t.Errorf("store after Purge: present %v, stats %+v", ok, b.Stats())
	}
}

func TestRedisMalformed(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 10000, 0)
	k := key("bad")
	a.Set(ctx, k, entryOf(300), time.Minute)
	if err := a.c.Set(ctx, a.dataKey(redisMember(k)), "\x01garbage", redis.KeepTTL).Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Get(ctx, k); ok {
		t.Fatal("malformed entry was a hit")
	}
	if n, _ := a.c.Exists(ctx, a.dataKey(redisMember(k))).Result(); n != 0 {
		t.Error("malformed entry not deleted")
	}
	if st := a.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("stats after the malformed entry: %+v, want nothing held", st)
	}
}

func TestRedisFlights(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 1<<20, 0)
	// Waiters are woken by the subscription alone: a missed notification would show
	// as a Wait that ends with its context.
	b.poll = time.Minute
	want := &Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"ok":true}`), Stored: time.Unix(1700000000, 0)}

	k := key("flight")
	if leader, err := a.Claim(ctx, k, time.Minute); err != nil || !leader {
		t.Fatalf("first Claim: leader %v, %v", leader, err)
	}
	if leader, err := b.Claim(ctx, k, time.Minute); err != nil || leader {
		t.Fatalf("second Claim: leader %v, %v", leader, err)
	}
	w := goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	a.Set(ctx, k, want, time.Minute)
	if r := <-w; !r.ok || !sameEntry(r.e, want) {
		t.Fatalf("Wait after Set: %+v", r)
	}
	if leader, err := b.Claim(ctx, k, time.Minute); err != nil || !leader {
		t.Errorf("Claim after Set: leader %v, %v; Set should clear the marker", leader, err)
	}
	b.Release(ctx, k)

	k = key("released")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader")
	}
	w = goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	a.Release(ctx, k)
	if r := <-w; r.ok {
		t.Fatalf("Wait after Release: %+v", r)
	}

	k = key("declined")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader")
	}
	w = goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	a.Set(ctx, k, &Entry{Status: 200, Body: make([]byte, 2<<20)}, time.Minute)
	if r := <-w; r.ok {
		t.Fatalf("Wait after a declined Set: %+v", r)
	}

	// Without a flight Wait answers at once: the entry, or nothing.
	if _, ok := b.Wait(ctx, key("none")); ok {
		t.Error("Wait without flight nor entry returned an entry")
	}
	if e, ok := b.Wait(ctx, key("flight")); !ok || !sameEntry(e, want) {
		t.Errorf("Wait for a stored entry: %+v, %v", e, ok)
	}
	if _, err := a.Claim(ctx, key("x"), 0); err == nil {
		t.Error("Claim with no TTL accepted")
	}

	// A context that ends ends the Wait.
	k = key("cancelled")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader")
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan bool, 1)
	go func() {
		_, ok := b.Wait(cctx, k)
		done <- ok
	}()
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	cancel()
	if <-done {
		t.Error("cancelled Wait returned an entry")
	}
	if b.waiting() != 0 {
		t.Errorf("%d waiters left registered", b.waiting())
	}
}

func TestRedisFlightExpires(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 1<<20, 0)
	b.poll = 20 * time.Millisecond
	k := key("dead leader")
	if leader, _ := a.Claim(ctx, k, 200*time.Millisecond); !leader {
		t.Fatal("Claim not leader")
	}
	// A leader that dies never Sets nor Releases: the marker's TTL ends the Wait, by
	// the poll, long before the context.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, ok := b.Wait(wctx, k); ok {
		t.Fatal("Wait on an expired marker returned an entry")
	}
	if wctx.Err() != nil {
		t.Fatal("Wait ended with its context, not with the marker")
	}
}

func TestRedisWaitersShareSubscription(t *testing.T) {
	ctx := context.Background()
	_, a, b := redisPair(t, 1<<20, 0)
	b.poll = time.Minute
	const n = 50
	keys := []Key{key("shared flight 1"), key("shared flight 2")}
	for _, k := range keys {
		if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
			t.Fatal("Claim not leader")
		}
	}
	ws := make([]<-chan waitResult, n)
	for i := range ws {
		ws[i] = goWait(b, keys[i%2], 10*time.Second)
	}
	eventually(t, "waiters registered", func() bool { return b.waiting() == n })
	if got := b.subs.Load(); got != 1 {
		t.Errorf("%d subscriptions started, want 1", got)
	}
	if got := pubsubClients(t, a.c); got != 1 {
		t.Errorf("%d pub/sub connections on the server, want 1", got)
	}
	entries := []*Entry{entryOf(300), entryOf(400)}
	for i, k := range keys {
		a.Set(ctx, k, entries[i], time.Minute)
	}
	for i, w := range ws {
		if r := <-w; !r.ok || !sameEntry(r.e, entries[i%2]) {
			t.Fatalf("waiter %d: %+v", i, r)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	eventually(t, "subscription closed", func() bool { return pubsubClients(t, a.c) == 0 })
	// After Close a Wait still works, by polling.
	b.poll = 20 * time.Millisecond
	k := key("after close")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader")
	}
	w := goWait(b, k, 10*time.Second)
	a.Set(ctx, k, entries[0], time.Minute)
	if r := <-w; !r.ok {
		t.Fatalf("Wait after Close: %+v", r)
	}
}

// pubsubClients counts the server's pub/sub connections.
func pubsubClients(t *testing.T, c redis.UniversalClient) int {
	t.Helper()
	s, err := c.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(s, "flags=P")
}

func TestRedisDown(t *testing.T) {
	ctx := context.Background()
	srv, a, b := redisPair(t, 1<<20, 0)
	// go-redis retries a refused connection until the context ends, so every call
	// below takes the whole timeout: a short one keeps the test fast.
	const timeout = 100 * time.Millisecond
	a.timeout, b.timeout = timeout, timeout
	b.poll = time.Minute
	// Start b's subscription, to see it come back after the restart.
	k := key("before")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader")
	}
	w := goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	a.Release(ctx, k)
	<-w

	srv.Stop()
	// Each call gives up within its timeout; the slack covers scheduling under -race.
	const bound = timeout + time.Second
	for _, op := range []struct {
		name string
		run  func() bool // reports a wrong result
	}{
		{"Get", func() bool { _, ok := a.Get(ctx, key("x")); return ok }},
		{"Set", func() bool { a.Set(ctx, key("x"), entryOf(300), time.Minute); return false }},
		{"Delete", func() bool { a.Delete(ctx, key("x")); return false }},
		{"Purge", func() bool { a.Purge(ctx); return false }},
		{"Stats", func() bool { a.Stats(); return false }},
		{"Claim", func() bool { leader, err := a.Claim(ctx, key("x"), time.Minute); return leader || err == nil }},
		{"Release", func() bool { a.Release(ctx, key("x")); return false }},
		{"Wait", func() bool { _, ok := b.Wait(ctx, key("x")); return ok }},
	} {
		start := time.Now()
		wrong := op.run()
		if d := time.Since(start); d > bound {
			t.Errorf("%s with Redis down took %v, want under %v", op.name, d, bound)
		}
		if wrong {
			t.Errorf("%s with Redis down: wrong result", op.name)
		}
	}
	if a.Errors() < 7 || b.Errors() < 1 {
		t.Errorf("errors counted: %d and %d", a.Errors(), b.Errors())
	}
	if st := a.Stats(); st.Hits != 0 || st.Misses != 1 {
		t.Errorf("stats with Redis down: %+v, want the Get as a miss", st)
	}

	srv.Restart()
	eventually(t, "store back", func() bool {
		a.Set(ctx, key("after"), entryOf(300), time.Minute)
		_, ok := b.Get(ctx, key("after"))
		return ok
	})
	// The subscription reconnects by itself; only then can a Wait that does not poll
	// end by notification.
	eventually(t, "subscription back", func() bool {
		n, err := a.c.PubSubNumSub(ctx, b.channel).Result()
		return err == nil && n[b.channel] == 1
	})
	k = key("after restart")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader after restart")
	}
	w = goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	a.Set(ctx, k, entryOf(300), time.Minute)
	if r := <-w; !r.ok {
		t.Fatalf("Wait after restart: %+v", r)
	}
	if got := b.subs.Load(); got != 1 {
		t.Errorf("%d subscriptions started, want the first one, reconnected", got)
	}
}

func TestRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starting a cluster takes seconds")
	}
	ctx := context.Background()
	addrs := redistest.StartCluster(t, 3)
	client := func() redis.UniversalClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	p := redisPrefix(t)
	a := newTestRedis(t, client(), p, 1000, 0)
	b := newTestRedis(t, client(), p, 1000, 0)
	other := newTestRedis(t, client(), redisPrefix(t), 1000, 0)
	b.poll = time.Minute

	for i := range 4 { // the fourth evicts the first
		a.Set(ctx, key(fmt.Sprint("c", i)), entryOf(300), time.Minute)
		time.Sleep(2 * time.Millisecond)
	}
	other.Set(ctx, key("c1"), entryOf(300), 0)
	for i, want := range []bool{false, true, true, true} {
		if _, ok := b.Get(ctx, key(fmt.Sprint("c", i))); ok != want {
			t.Errorf("c%d present %v, want %v", i, ok, want)
		}
	}
	if st := a.Stats(); st.Entries != 3 || st.Bytes != 900 || st.Evictions != 1 {
		t.Errorf("stats %+v, want 3 entries, 900 bytes, 1 eviction", st)
	}

	k := key("cluster flight")
	if leader, err := a.Claim(ctx, k, time.Minute); err != nil || !leader {
		t.Fatalf("Claim: leader %v, %v", leader, err)
	}
	if leader, err := b.Claim(ctx, k, time.Minute); err != nil || leader {
		t.Fatalf("second Claim: leader %v, %v", leader, err)
	}
	w := goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	want := entryOf(200)
	a.Set(ctx, k, want, time.Minute)
	if r := <-w; !r.ok || !sameEntry(r.e, want) {
		t.Fatalf("Wait after Set: %+v", r)
	}
	k = key("cluster release")
	if leader, _ := a.Claim(ctx, k, time.Minute); !leader {
		t.Fatal("Claim not leader")
	}
	w = goWait(b, k, 10*time.Second)
	eventually(t, "waiter registered", func() bool { return b.waiting() == 1 })
	a.Release(ctx, k)
	if r := <-w; r.ok {
		t.Fatalf("Wait after Release: %+v", r)
	}

	a.Purge(ctx)
	if st := b.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after Purge: %+v", st)
	}
	if _, ok := other.Get(ctx, key("c1")); !ok {
		t.Error("Purge removed another prefix's entry")
	}
	if a.Errors()+b.Errors()+other.Errors() != 0 {
		t.Errorf("errors: %d, %d, %d", a.Errors(), b.Errors(), other.Errors())
	}
}

func BenchmarkRedisGetHit(b *testing.B) {
	srv := redistest.Start(b)
	r := newTestRedis(b, redisClient(b, srv.Addr()), redisPrefix(b), 1<<20, 0)
	ctx := context.Background()
	k := key("bench")
	r.Set(ctx, k, &Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: bytes.Repeat([]byte("x"), 1024)}, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok := r.Get(ctx, k); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkRedisGetHitParallel(b *testing.B) {
	srv := redistest.Start(b)
	r := newTestRedis(b, redisClient(b, srv.Addr()), redisPrefix(b), 1<<20, 0)
	ctx := context.Background()
	k := key("bench")
	r.Set(ctx, k, &Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: bytes.Repeat([]byte("x"), 1024)}, 0)
	var once sync.Once
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := r.Get(ctx, k); !ok {
				once.Do(func() { b.Error("miss") })
			}
		}
	})
}
