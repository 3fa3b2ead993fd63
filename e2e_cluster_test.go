package openairelay_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
	"github.com/caddyrelay/openairelay/internal/redistest"
)

// The cluster tests run the relay as several Caddy processes (the binary
// cmd/caddy builds; cluster_helpers_test.go) that name the same Redis in
// `state redis { … }` (or `cache redis { … }`), in front of one fake
// upstream in this process, and check that what the instances share is
// shared: a pool's limits used in full whatever instance the load arrives
// at, a key retired everywhere, cached answers, concurrency leases that an
// instance's death gives back, client budgets; and that they keep serving
// (or refuse cleanly) when Redis goes away. Each test has a Redis of its
// own (skipped without redis-server, unless CI is set, and before the
// binary is built) and a prefix of its own.

// TestClusterHarness checks the harness itself, without Redis: one
// instance starts from the built binary, answers a chat completion through
// the SDK, shows its key on its own admin endpoint, and stops on SIGTERM; a
// second one beside it is killed with SIGKILL.
func TestClusterHarness(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "harness", 1, fakeopenai.KeyLimits{RPM: 600}, "rpm 600")
	block := `
		client app {
			key rk-cluster-harness
		}
		upstream fake ` + fake.URL() + ` {
` + lines + `		}`
	in := startInstance(t, "A", block, env...)
	res, err := in.sdk("rk-cluster-harness").Chat.Completions.New(context.Background(), chatParams("hello cluster"))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Choices[0].Message.Content; !strings.Contains(got, "hello cluster") {
		t.Errorf("content %q", got)
	}
	if n := fake.Count(keys[0]); n != 1 {
		t.Errorf("the upstream saw %d requests with the key; want 1", n)
	}
	if st := in.keyState("harness-0"); st != "available" {
		t.Errorf("the instance's admin API shows the key as %q; want available", st)
	}
	// A second instance of the same config (ports of its own) dies on
	// SIGKILL, as the lease test needs.
	b := startInstance(t, "B", block, env...)
	if _, err := b.sdk("rk-cluster-harness").Chat.Completions.New(context.Background(), chatParams("hello B")); err != nil {
		t.Fatal(err)
	}
	b.kill()
	if resp, err := http.Get(b.base + "/models"); err == nil {
		resp.Body.Close()
		t.Error("B's site still answers after kill")
	}
	stopped := time.Now()
	in.stop()
	if d := time.Since(stopped); d > 5*time.Second {
		t.Errorf("the instance took %v to stop on SIGTERM", d)
	}
	if resp, err := http.Get(in.base + "/models"); err == nil {
		resp.Body.Close()
		t.Error("the site still answers after stop")
	}
}

// TestClusterPoolSharedUnderUnevenLoad sends a burst of 120 requests at
// once, 80 through one instance, 30 through another and 10 through the
// third, to a pool of two keys of 600 RPM (the fake enforces what the relay
// is configured with). The upstream must never say 429, no key may exceed
// its limit in any window, and the pool must be used in full while the
// burst lasts: at least 90 % of what the keys' buckets allowed from the
// first request to the last. Instances that each kept a third of the pool
// (or limit/N) would serve the 80 at a third of the rate, and use about
// half of it.
func TestClusterPoolSharedUnderUnevenLoad(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	const rpm = 600
	lines, keys, env := clusterKeys(fake, "uneven", 2, fakeopenai.KeyLimits{RPM: rpm}, "rpm "+itoa(rpm))
	block := `
		client app {
			key rk-cluster-uneven
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		max_wait 30s
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t))
	ins := []*instance{
		startInstance(t, "A", block, env...),
		startInstance(t, "B", block, env...),
		startInstance(t, "C", block, env...),
	}
	shares := []int{80, 30, 10}

	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := map[string]int{}
	var firstErr error
	start := make(chan struct{})
	for i, in := range ins {
		client := in.sdk("rk-cluster-uneven")
		for range shares[i] {
			wg.Go(func() {
				<-start
				_, err := client.Chat.Completions.New(context.Background(), chatParams("share the pool"))
				if err != nil {
					mu.Lock()
					failed[in.name]++
					if firstErr == nil {
						firstErr = fmt.Errorf("through %s: %w", in.name, err)
					}
					mu.Unlock()
				}
			})
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("the burst took %v", time.Since(began).Round(time.Millisecond))
	if len(failed) > 0 {
		t.Errorf("failed requests by instance %v; first: %v", failed, firstErr)
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered %d requests with 429; want none", n)
	}
	times := admittedTimes(waitRecords(fake, 120))
	checkWindows(t, times, rpm)
	admitted, allowed, elapsed := poolUse(times, keys, rpm)
	for i, k := range keys {
		t.Logf("key %d served %d", i, len(times[k]))
	}
	t.Logf("the upstream admitted %d requests in %v; the pool allowed %.1f (%.0f %%)",
		admitted, elapsed.Round(time.Millisecond), allowed, 100*float64(admitted)/allowed)
	if float64(admitted) < 0.9*allowed {
		t.Errorf("the upstream admitted %d requests in %v where the pool's buckets allowed %.1f: under 90 %% (the instances do not share the pool)",
			admitted, elapsed.Round(time.Millisecond), allowed)
	}
}

// TestClusterRetiredKeyRetiredEverywhere retires a key through one
// instance's admin API and checks that the other two send it nothing, then
// restores it through the same instance and checks that another uses it
// again. The relay balances round robin, so a key it thinks available gets
// every other request.
func TestClusterRetiredKeyRetiredEverywhere(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "retire", 2, fakeopenai.KeyLimits{RPM: 6000}, "rpm 6000")
	block := `
		client app {
			key rk-cluster-retire
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		balance weighted_round_robin
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t))
	a := startInstance(t, "A", block, env...)
	b := startInstance(t, "B", block, env...)
	c := startInstance(t, "C", block, env...)
	send := func(in *instance, n int) {
		t.Helper()
		client := in.sdk("rk-cluster-retire")
		for range n {
			if _, err := client.Chat.Completions.New(context.Background(), chatParams("which key")); err != nil {
				t.Fatalf("through %s: %v", in.name, err)
			}
		}
	}
	for _, in := range []*instance{a, b, c} {
		send(in, 4)
	}
	if fake.Count(keys[0]) == 0 || fake.Count(keys[1]) == 0 {
		t.Fatalf("before the retirement the keys served %d and %d requests; want both used", fake.Count(keys[0]), fake.Count(keys[1]))
	}

	if code, body := a.adminPost("/openai_relay/keys/retire-0/retire"); code != http.StatusOK {
		t.Fatalf("retire through A: %d %s", code, body)
	}
	// The others' admin views are mirrors of the shared health: give them
	// a moment to show it, but what counts is what they send.
	deadline := time.Now().Add(5 * time.Second)
	for b.keyState("retire-0") != "retired" || c.keyState("retire-0") != "retired" {
		if time.Now().After(deadline) {
			t.Logf("5s after the retirement B shows the key %q and C %q", b.keyState("retire-0"), c.keyState("retire-0"))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := fake.Count(keys[0])
	send(b, 10)
	send(c, 10)
	if n := fake.Count(keys[0]) - before; n != 0 {
		t.Errorf("the key retired through A got %d of the 20 requests sent through B and C; want none", n)
	}

	if code, body := a.adminPost("/openai_relay/keys/retire-0/restore"); code != http.StatusOK {
		t.Fatalf("restore through A: %d %s", code, body)
	}
	before = fake.Count(keys[0])
	deadline = time.Now().Add(10 * time.Second)
	for fake.Count(keys[0]) == before {
		if time.Now().After(deadline) {
			t.Fatalf("10s after the key was restored through A, B has not used it (B shows it %q)", b.keyState("retire-0"))
		}
		send(b, 2)
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterCacheShared asks instance A a chat completion, then B and C
// the same: both answers come from the shared cache (X-Relay-Cache: HIT,
// the same id as A's answer, which the fake makes new for every call), and
// the upstream saw one request.
func TestClusterCacheShared(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "cache", 1, fakeopenai.KeyLimits{}, "")
	block := `
		client app {
			key rk-cluster-cache
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		cache redis {
			ttl 1h
		}
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t))
	a := startInstance(t, "A", block, env...)
	b := startInstance(t, "B", block, env...)
	c := startInstance(t, "C", block, env...)
	body := clusterChat("cache me across instances")
	code, h, resp, err := a.post("rk-cluster-cache", "/chat/completions", body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("through A: %d %v %s", code, err, resp)
	}
	if got := h.Get("X-Relay-Cache"); got != "MISS" {
		t.Errorf("A's answer: X-Relay-Cache %q; want MISS", got)
	}
	id := idOf(t, resp)
	// The answer is stored as it ends, which may be just after the client
	// has it.
	time.Sleep(300 * time.Millisecond)
	for _, in := range []*instance{b, c} {
		code, h, resp, err := in.post("rk-cluster-cache", "/chat/completions", body)
		if err != nil || code != http.StatusOK {
			t.Fatalf("through %s: %d %v %s", in.name, code, err, resp)
		}
		if got := h.Get("X-Relay-Cache"); got != "HIT" {
			t.Errorf("%s's answer: X-Relay-Cache %q; want HIT from the shared cache", in.name, got)
		}
		if got := idOf(t, resp); got != id {
			t.Errorf("%s's answer has id %s; want A's %s", in.name, got, id)
		}
	}
	if n := fake.Count(keys[0]); n != 1 {
		t.Errorf("the upstream saw %d requests; want 1", n)
	}
}

// TestClusterRedisDownServesLocally stops Redis under two instances with
// `on_error local`: every request is still served, none hangs (each within
// 5s, with a Redis timeout of 50ms). Redis then comes back, empty, on the
// same port, and the instances use it again: a key retired through A once
// Redis is back is not used by B.
func TestClusterRedisDownServesLocally(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "down", 2, fakeopenai.KeyLimits{RPM: 6000}, "rpm 6000")
	block := `
		client app {
			key rk-cluster-down
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		balance weighted_round_robin
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t), "timeout 50ms", "dial_timeout 1s", "on_error local")
	a := startInstance(t, "A", block, env...)
	b := startInstance(t, "B", block, env...)
	ins := []*instance{a, b}
	// timed sends n requests through in, one after another, each of
	// which must be answered 200 within 5s.
	timed := func(in *instance, n int, when string) {
		t.Helper()
		client := in.sdk("rk-cluster-down")
		for i := range n {
			began := time.Now()
			err := withDeadline(10*time.Second, func(ctx context.Context) error {
				_, err := client.Chat.Completions.New(ctx, chatParams("keep serving"))
				return err
			})
			took := time.Since(began)
			if err != nil {
				t.Errorf("%s, request %d through %s failed after %v: %v", when, i+1, in.name, took.Round(time.Millisecond), err)
			} else if took > 5*time.Second {
				t.Errorf("%s, request %d through %s took %v; want no hang on Redis (timeout 50ms)", when, i+1, in.name, took.Round(time.Millisecond))
			}
		}
	}
	for _, in := range ins {
		timed(in, 3, "with Redis up")
	}

	srv.Stop()
	for _, in := range ins {
		timed(in, 10, "with Redis stopped")
	}
	if t.Failed() {
		return
	}

	srv.Restart()
	// Once an instance is back on Redis, a retirement through A is seen
	// by B: B (round robin) then sends the key none of six requests. An
	// instance may take a while to try Redis again, so the retirement is
	// repeated (restore, retire) until that holds.
	deadline := time.Now().Add(20 * time.Second)
	clientB := b.sdk("rk-cluster-down")
	for attempt := 1; ; attempt++ {
		if code, body := a.adminPost("/openai_relay/keys/down-0/restore"); code != http.StatusOK {
			t.Fatalf("restore through A: %d %s", code, body)
		}
		if code, body := a.adminPost("/openai_relay/keys/down-0/retire"); code != http.StatusOK {
			t.Fatalf("retire through A: %d %s", code, body)
		}
		time.Sleep(500 * time.Millisecond)
		before := fake.Count(keys[0])
		for range 6 {
			if _, err := clientB.Chat.Completions.New(context.Background(), chatParams("back on redis")); err != nil {
				t.Fatalf("through B after Redis came back: %v", err)
			}
		}
		n := fake.Count(keys[0]) - before
		if n == 0 {
			t.Logf("B follows A's retirement again at attempt %d", attempt)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after Redis came back B still sends a key retired through A (%d of 6 requests at attempt %d): the instances do not use Redis again", n, attempt)
		}
	}
}

// TestClusterRedisDownRejects stops Redis under an instance with
// `on_error reject`: a request is then refused at once with a 503 and an
// OpenAI-shaped error body, not served from memory and not left hanging.
func TestClusterRedisDownRejects(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "reject", 1, fakeopenai.KeyLimits{RPM: 6000}, "rpm 6000")
	in := startInstance(t, "A", `
		client app {
			key rk-cluster-reject
		}
		upstream pool `+fake.URL()+` {
`+lines+`		}
`+stateBlock([]string{srv.Addr()}, clusterPrefix(t), "timeout 50ms", "dial_timeout 1s", "on_error reject"), env...)
	body := clusterChat("refuse without redis")
	if code, _, resp, err := in.post("rk-cluster-reject", "/chat/completions", body); err != nil || code != http.StatusOK {
		t.Fatalf("with Redis up: %d %v %s", code, err, resp)
	}
	srv.Stop()
	before := fake.Count(keys[0])
	began := time.Now()
	code, _, resp, err := in.post("rk-cluster-reject", "/chat/completions", body)
	took := time.Since(began)
	if err != nil {
		t.Fatalf("with Redis stopped: %v after %v", err, took)
	}
	if code != http.StatusServiceUnavailable || !isOpenAIError([]byte(resp)) {
		t.Errorf("with Redis stopped: %d %s; want 503 with an OpenAI error body", code, resp)
	}
	if took > 5*time.Second {
		t.Errorf("the refusal took %v; want no hang on Redis (timeout 50ms)", took.Round(time.Millisecond))
	}
	if n := fake.Count(keys[0]) - before; n != 0 {
		t.Errorf("with Redis stopped and on_error reject, %d requests reached the upstream", n)
	}
}

// TestClusterLeaseFreedWhenInstanceDies gives a key max_concurrent 1 and
// holds its slot through instance A with a slow upstream answer: B is
// refused the key meanwhile (max_wait 1s). Then A is killed (SIGKILL, so
// it gives nothing back) and B must get the key once A's lease expires,
// within 25s.
func TestClusterLeaseFreedWhenInstanceDies(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "lease", 1, fakeopenai.KeyLimits{}, "rpm 6000\n\t\t\t\tmax_concurrent 1")
	block := `
		client app {
			key rk-cluster-lease
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		max_wait 1s
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t))
	a := startInstance(t, "A", block, env...)
	b := startInstance(t, "B", block, env...)
	for _, in := range []*instance{a, b} {
		if _, err := in.sdk("rk-cluster-lease").Chat.Completions.New(context.Background(), chatParams("warm up")); err != nil {
			t.Fatalf("through %s: %v", in.name, err)
		}
	}
	fake.AddFault(fakeopenai.Fault{Latency: time.Minute, Count: 1, Key: keys[0]})
	held := make(chan error, 1)
	go func() {
		_, err := a.sdk("rk-cluster-lease").Chat.Completions.New(context.Background(), chatParams("hold the slot"))
		held <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for fake.Count(keys[0]) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("A's slow request did not reach the upstream within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	clientB := b.sdk("rk-cluster-lease")
	_, err := clientB.Chat.Completions.New(context.Background(), chatParams("while A holds it"))
	if err == nil {
		t.Fatal("B was served while A held the key's only slot (max_concurrent 1 is not shared)")
	}
	if !isRefusal(err, http.StatusTooManyRequests, "") && !isRefusal(err, http.StatusServiceUnavailable, "") {
		t.Errorf("B while A holds the slot: %v; want a 429 (or 503) refusal", err)
	}
	if n := fake.Count(keys[0]); n != 3 {
		t.Errorf("the upstream saw %d requests while A held the only slot; want 3", n)
	}

	a.kill()
	killed := time.Now()
	if err := <-held; err == nil {
		t.Error("A's held request succeeded although A was killed")
	}
	deadline = killed.Add(25 * time.Second)
	for attempt := 1; ; attempt++ {
		_, err := clientB.Chat.Completions.New(context.Background(), chatParams("after A died"))
		if err == nil {
			t.Logf("B got the key %v after A was killed (attempt %d)", time.Since(killed).Round(100*time.Millisecond), attempt)
			break
		}
		if !isRefusal(err, http.StatusTooManyRequests, "") && !isRefusal(err, http.StatusServiceUnavailable, "") {
			t.Fatalf("B after A was killed: %v; want an answer, or a 429 (503) refusal while A's lease lasts", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("25s after A was killed B still cannot use the key: %v (the dead instance's lease does not expire)", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestClusterBudgetSharedAcrossInstances spends a client's daily budget
// through A and B in turn, one request at a time: the refusal (429
// insufficient_quota) must come as soon as the spend of the two together
// reaches the budget, not when each has spent it, and then C refuses too.
func TestClusterBudgetSharedAcrossInstances(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "budget", 1, fakeopenai.KeyLimits{}, "")
	const budget, price = 0.005, 100.0 // dollars; dollars per million tokens, in and out
	block := `
		client spender {
			key rk-cluster-budget
			budget ` + fmt.Sprint(budget) + ` daily
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		price gpt-4o-mini ` + fmt.Sprint(price) + ` ` + fmt.Sprint(price) + `
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t))
	a := startInstance(t, "A", block, env...)
	b := startInstance(t, "B", block, env...)
	c := startInstance(t, "C", block, env...)
	var spent, before float64 // in all; before the last request served
	served := 0
	var refusal error
	for i := 0; i < 40 && refusal == nil; i++ {
		in := []*instance{a, b}[i%2]
		res, err := in.sdk("rk-cluster-budget").Chat.Completions.New(context.Background(), chatParams("spend some money"))
		if err != nil {
			if !isRefusal(err, http.StatusTooManyRequests, "insufficient_quota") {
				t.Fatalf("request %d through %s: %v; want an answer or 429 insufficient_quota", i+1, in.name, err)
			}
			refusal = fmt.Errorf("through %s after %d requests: %w", in.name, served, err)
			break
		}
		served++
		before = spent
		spent += float64(res.Usage.PromptTokens+res.Usage.CompletionTokens) * price / 1e6
		// Spend is recorded as the answer ends, which may be just after
		// the client has it.
		time.Sleep(100 * time.Millisecond)
	}
	if refusal == nil {
		t.Fatalf("40 requests through A and B spent $%.6f of a $%g budget and none was refused", spent, budget)
	}
	t.Logf("refused %v; spent $%.6f", refusal, spent)
	if spent < budget-1e-12 {
		t.Errorf("refused with $%.6f spent of a $%g budget", spent, budget)
	}
	if before >= budget-1e-12 {
		t.Errorf("served a request with $%.6f already spent of a $%g budget: the instances do not share the spend", before, budget)
	}
	_, err := c.sdk("rk-cluster-budget").Chat.Completions.New(context.Background(), chatParams("spend some money"))
	if !isRefusal(err, http.StatusTooManyRequests, "insufficient_quota") {
		t.Errorf("C after the budget was spent through A and B: %v; want 429 insufficient_quota", err)
	}
	if n := fake.Count(keys[0]); n != served {
		t.Errorf("the upstream saw %d requests; want the %d served (refused ones must not reach it)", n, served)
	}
}

// TestClusterRedisCluster runs two instances on a three-node Redis Cluster
// sharing one key of 1200 RPM, with 80 requests at once split 60/20: no
// 429 from the upstream, the limit held in every window, and the key used
// in full while the burst lasts (90 %, as in the uneven-load test).
func TestClusterRedisCluster(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	addrs := redistest.StartCluster(t, 3)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	const rpm = 1200
	lines, keys, env := clusterKeys(fake, "rcluster", 1, fakeopenai.KeyLimits{RPM: rpm}, "rpm "+itoa(rpm))
	// Several addresses make the store a cluster client (as go-redis's
	// UniversalClient decides); the contract names no `cluster` option.
	block := `
		client app {
			key rk-cluster-rcluster
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		max_wait 30s
` + stateBlock(addrs, clusterPrefix(t))
	ins := []*instance{startInstance(t, "A", block, env...), startInstance(t, "B", block, env...)}
	shares := []int{60, 20}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	start := make(chan struct{})
	for i, in := range ins {
		client := in.sdk("rk-cluster-rcluster")
		for range shares[i] {
			wg.Go(func() {
				<-start
				if _, err := client.Chat.Completions.New(context.Background(), chatParams("cluster")); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("through %s: %w", in.name, err))
					mu.Unlock()
				}
			})
		}
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d requests failed; first: %v", len(errs), errs[0])
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered %d requests with 429; want none", n)
	}
	times := admittedTimes(waitRecords(fake, 80))
	checkWindows(t, times, rpm)
	admitted, allowed, elapsed := poolUse(times, keys, rpm)
	t.Logf("the upstream admitted %d requests in %v; the key allowed %.1f (%.0f %%)",
		admitted, elapsed.Round(time.Millisecond), allowed, 100*float64(admitted)/allowed)
	if float64(admitted) < 0.9*allowed {
		t.Errorf("the upstream admitted %d requests in %v where the key's bucket allowed %.1f: under 90 %% (the instances do not share the key)",
			admitted, elapsed.Round(time.Millisecond), allowed)
	}
}
