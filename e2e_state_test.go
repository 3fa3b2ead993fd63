package openairelay_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The relay's state across requests and reloads: what cached prompt tokens
// cost and count, the snapshot writer, queued requests, and how keys share
// the traffic by weight.

// keyBlocks gives the `key {env.…}` lines of setKeys an options block each:
// the i-th key gets opts[i] (the last of opts for the keys beyond).
func keyBlocks(envs string, opts ...string) string {
	var b strings.Builder
	for i, line := range strings.Split(strings.TrimRight(envs, "\n"), "\n") {
		fmt.Fprintf(&b, "%s {\n\t\t\t\t%s\n\t\t\t}\n", line, opts[min(i, len(opts)-1)])
	}
	return b.String()
}

// TestE2EStateCachedInputPricedAndCounted sends one long prompt twice: the
// second answer reports cached prompt tokens (as the API does for a repeated
// prefix of 1024 tokens or more), which the relay prices at the cached input
// price and counts in the tokens metric.
func TestE2EStateCachedInputPricedAndCounted(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	envs, keys := setKeys(t, fake, "statecached", 1, fakeopenai.KeyLimits{})
	e := startRelay(t, fake, `
		client cachedspender {
			key rk-state-cached-client
		}
		upstream cachedup {UPSTREAM} {
`+keyBlocks(envs, "name state-cached")+`		}
		price gpt-4o-mini 0.15 0.60 0.075`)
	client := sdk("rk-state-cached-client")
	prompt := strings.Repeat("lorem ipsum dolor sit amet ", 170) // 4,590 characters: 1,148 tokens by the fake's estimate
	const inPrice, outPrice, cachedPrice = 0.15, 0.60, 0.075
	var want float64
	var cachedSum int64
	for i := range 2 {
		res, err := client.Chat.Completions.New(context.Background(), chatParams(prompt))
		if err != nil {
			t.Fatal(err)
		}
		u := res.Usage
		cached := u.PromptTokensDetails.CachedTokens
		t.Logf("request %d: prompt %d (cached %d), completion %d", i+1, u.PromptTokens, cached, u.CompletionTokens)
		if u.PromptTokens < 1100 {
			t.Fatalf("prompt of %d tokens; the test needs 1100 or more", u.PromptTokens)
		}
		if i == 1 && cached <= 0 {
			t.Fatalf("the repeated prompt reports cached_tokens %d; want > 0", cached)
		}
		want += (float64(u.PromptTokens-cached)*inPrice + float64(cached)*cachedPrice + float64(u.CompletionTokens)*outPrice) / 1e6
		cachedSum += cached
	}

	var clients []struct {
		Name       string  `json:"name"`
		SpentToday float64 `json:"spent_usd_today"`
		SpentMonth float64 `json:"spent_usd_this_month"`
	}
	adminGet(t, "/openai_relay/clients", &clients)
	found := false
	for _, c := range clients {
		if c.Name != "cachedspender" {
			continue
		}
		found = true
		if math.Abs(c.SpentToday-want) > 1e-12 || math.Abs(c.SpentMonth-want) > 1e-12 {
			t.Errorf("client spent $%.15f today, $%.15f this month; want $%.15f (cached tokens at $%g a million)", c.SpentToday, c.SpentMonth, want, cachedPrice)
		}
	}
	if !found {
		t.Fatalf("client cachedspender not in the admin API: %+v", clients)
	}

	series := `caddy_openai_relay_tokens_total{key="state-cached",kind="cached",upstream="cachedup"}`
	if got := metricSum(t, series); got != float64(cachedSum) {
		t.Errorf("%s = %v; want the %d cached tokens reported", series, got, cachedSum)
	}
	if got := metricSum(t, `caddy_openai_relay_tokens_total{key="state-cached",kind="prompt",upstream="cachedup"}`); got < 2*1100 {
		t.Errorf("prompt tokens metric %v; want both prompts", got)
	}
	if n := fake.Count(keys[0]); n != 2 {
		t.Errorf("the upstream saw %d requests; want 2", n)
	}
	e.assertNoSecrets(keys, []string{"rk-state-cached-client"})
}

// snapshotFile is the relay's state file (persist.go) under the
// XDG_DATA_HOME that TestMain sets.
func snapshotFile() string {
	return filepath.Join(os.Getenv("XDG_DATA_HOME"), "caddy", "openai_relay", "state.json")
}

// snapshotRequests reads the daily request counter the snapshot holds for an
// upstream key (its entry is named by the upstream URL and a hash of the
// secret), and the file's modification time.
func snapshotRequests(t *testing.T, secret string) (requests int64, found bool, mtime time.Time) {
	t.Helper()
	path := snapshotFile()
	st, err := os.Stat(path)
	if err != nil {
		return 0, false, time.Time{}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Counters map[string]struct {
			Requests int64 `json:"requests"`
		} `json:"counters"`
	}
	if err := json.Unmarshal(data, &snap); err != nil {
		t.Fatalf("the snapshot is not JSON (%v): %.300s", err, data)
	}
	sum := sha256.Sum256([]byte(secret))
	suffix := "#" + hex.EncodeToString(sum[:16])
	for id, c := range snap.Counters {
		if strings.HasPrefix(id, "key:") && strings.HasSuffix(id, suffix) {
			return c.Requests, true, st.ModTime()
		}
	}
	return 0, false, st.ModTime()
}

// TestE2EStateSnapshotRewrittenAfterReloads loads a config and reloads it
// twice, then checks that the periodic writer (every 200ms in the tests)
// still saves: the requests made after the last reload reach the file
// without any further reload or stop (which also save).
func TestE2EStateSnapshotRewrittenAfterReloads(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	envs, keys := setKeys(t, fake, "statesnap", 1, fakeopenai.KeyLimits{})
	config := func(retries int) string {
		return `
		client app {
			key rk-state-snap-client
		}
		upstream snap {UPSTREAM} {
` + envs + `		}
		retries ` + fmt.Sprint(retries)
	}
	client := sdk("rk-state-snap-client")
	startRelay(t, fake, config(1))
	if _, err := client.Chat.Completions.New(context.Background(), chatParams("before the reloads")); err != nil {
		t.Fatal(err)
	}
	startRelay(t, fake, config(2)) // reload 1
	startRelay(t, fake, config(3)) // reload 2
	_, _, before := snapshotRequests(t, keys[0])
	if before.IsZero() {
		t.Fatalf("no snapshot at %s after two reloads (a reload saves it)", snapshotFile())
	}

	const after = 3
	for range after {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("after the reloads")); err != nil {
			t.Fatal(err)
		}
	}
	want := int64(1 + after)
	sent := time.Now()
	deadline := sent.Add(3 * time.Second)
	for {
		got, found, mtime := snapshotRequests(t, keys[0])
		if found && got == want && mtime.After(before) {
			t.Logf("the snapshot holds the %d requests %v after the last one", got, time.Since(sent).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("3s after the requests the snapshot holds %d requests for the key (found %v, modified %v, %v before them); want %d: the periodic writer stopped after the reloads",
				got, found, mtime.Format(time.StampMilli), before.Format(time.StampMilli), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestE2EStateQueuedRequestWakesAfterReload holds the only slot of a key
// (max_concurrent 1) with a slow upstream answer, queues a second request
// behind it, reloads the config meanwhile, and checks that the queued
// request is served as soon as the first ends, under the new config's
// reign, instead of waiting out max_wait.
func TestE2EStateQueuedRequestWakesAfterReload(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	envs, keys := setKeys(t, fake, "statequeue", 1, fakeopenai.KeyLimits{})
	config := func(retries int) string {
		return `
		client app {
			key rk-state-queue-client
		}
		upstream q {UPSTREAM} {
` + keyBlocks(envs, "max_concurrent 1") + `		}
		max_wait 10s
		retries ` + fmt.Sprint(retries)
	}
	startRelay(t, fake, config(1))
	client := sdk("rk-state-queue-client")
	// A first answer, so that the key is past learning its limits (one
	// request at a time for that reason too).
	if _, err := client.Chat.Completions.New(context.Background(), chatParams("warm up")); err != nil {
		t.Fatal(err)
	}
	const hold = 3 * time.Second
	fake.AddFault(fakeopenai.Fault{Latency: hold, Count: 1, Key: keys[0]})

	type result struct {
		err  error
		done time.Time
	}
	send := func(prompt string, out chan<- result) {
		_, err := client.Chat.Completions.New(context.Background(), chatParams(prompt))
		out <- result{err, time.Now()}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(hold / 3)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	first, second := make(chan result, 1), make(chan result, 1)
	start := time.Now()
	go send("held by the upstream", first)
	waitFor("the first request upstream", func() bool { return fake.Count(keys[0]) == 2 })
	go send("queued behind it", second)
	waitFor("the second request in the queue", func() bool { return metricSum(t, "caddy_openai_relay_queue_length") >= 1 })

	startRelay(t, fake, config(2)) // the reload, with the same key
	reloaded := time.Now()
	if reloaded.Sub(start) >= hold {
		t.Fatalf("the reload took until %v after the first request; the test needs it within the %v hold", reloaded.Sub(start), hold)
	}
	if n := fake.Count(keys[0]); n != 2 {
		t.Errorf("the upstream has seen %d requests while the first holds the key's only slot; want 2 (max_concurrent 1 kept across the reload)", n)
	}

	var r1, r2 result
	select {
	case r1 = <-first:
	case <-time.After(hold + 5*time.Second):
		t.Fatal("the first request never ended")
	}
	if r1.err != nil {
		t.Fatalf("first request: %v", r1.err)
	}
	select {
	case r2 = <-second:
	case <-time.After(12 * time.Second):
		t.Fatal("the queued request never ended")
	}
	if r2.err != nil {
		t.Fatalf("the queued request failed %v after the first ended (max_wait 10s): %v", r2.done.Sub(r1.done), r2.err)
	}
	lag := r2.done.Sub(r1.done)
	t.Logf("first ended %v after it started; the queued one %v after that", r1.done.Sub(start), lag)
	if lag > time.Second {
		t.Errorf("the queued request was served %v after the first ended; want promptly (well within max_wait 10s)", lag)
	}
	if n := fake.Count(keys[0]); n != 3 {
		t.Errorf("the upstream saw %d requests; want 3", n)
	}
}

// TestE2EStateWeightedShares sends 1000 requests at concurrency 8 through
// three keys of weights 7, 2 and 1, without limits, under each balance
// policy: each key's share of what the upstream received must follow its
// weight.
func TestE2EStateWeightedShares(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	weights := []int{7, 2, 1}
	for _, tc := range []struct {
		policy    string // "" = the default (least_loaded)
		prefix    string
		tolerance float64 // percentage points
	}{
		{"", "shareleast", 2},
		{"weighted_round_robin", "sharewrr", 2},
		{"weighted_random", "sharerandom", 5},
	} {
		name := tc.policy
		if name == "" {
			name = "least_loaded (default)"
		}
		t.Run(name, func(t *testing.T) {
			envs, keys := setKeys(t, fake, tc.prefix, len(weights), fakeopenai.KeyLimits{})
			var opts []string
			for _, w := range weights {
				opts = append(opts, fmt.Sprintf("weight %d", w))
			}
			balance := ""
			if tc.policy != "" {
				balance = "balance " + tc.policy
			}
			startRelay(t, fake, `
		client app {
			key rk-state-shares-client
		}
		upstream shares {UPSTREAM} {
`+keyBlocks(envs, opts...)+`		}
		`+balance)
			const requests = 1000
			failed, elapsed := burst(t, sdk("rk-state-shares-client"), requests, "share", 0, 8)
			if failed > 0 {
				t.Errorf("%d of %d requests failed", failed, requests)
			}
			total := 0
			for _, k := range keys {
				total += fake.Count(k)
			}
			if total != requests {
				t.Errorf("the upstream saw %d requests; want %d", total, requests)
			}
			var shares []string
			for i, k := range keys {
				got := 100 * float64(fake.Count(k)) / float64(total)
				want := 100 * float64(weights[i]) / 10
				shares = append(shares, fmt.Sprintf("%.1f%%", got))
				if math.Abs(got-want) > tc.tolerance {
					t.Errorf("key of weight %d took %.1f%% of the requests; want %.0f%% ± %.0f", weights[i], got, want, tc.tolerance)
				}
			}
			t.Logf("%d requests in %v: shares %s for weights %v", requests, elapsed.Round(time.Millisecond), strings.Join(shares, " / "), weights)
		})
	}
}
