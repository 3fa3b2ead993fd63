package openairelay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// burst sends n chat requests through the relay from `workers` goroutines,
// each sending its next request as soon as its last one is answered (so the
// offered load stays far above the pool's capacity), and returns how many
// failed and how long the whole burst took. workers <= 0 sends all n at once.
func burst(t *testing.T, client openai.Client, n int, prompt string, maxTokens int64, workers ...int) (failed int, elapsed time.Duration) {
	t.Helper()
	w := n
	if len(workers) > 0 && workers[0] > 0 {
		w = min(workers[0], n)
	}
	var wg sync.WaitGroup
	var errs, next atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for range w {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				p := chatParams(prompt)
				if maxTokens > 0 {
					p.MaxTokens = openai.Int(maxTokens)
				}
				if _, err := client.Chat.Completions.New(context.Background(), p); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		t.Logf("first error: %v", e)
	}
	return int(errs.Load()), time.Since(start)
}

func setKeys(t *testing.T, fake *fakeopenai.Server, prefix string, n int, lim fakeopenai.KeyLimits) (envs string, keys []string) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		k := fmt.Sprintf("sk-%s-%02d-abcdefghijklmnop", prefix, i)
		env := fmt.Sprintf("E2E_%s_%d", strings.ToUpper(prefix), i)
		fake.AddKey(k, lim)
		t.Setenv(env, k)
		fmt.Fprintf(&b, "\t\t\tkey {env.%s}\n", env)
		keys = append(keys, k)
	}
	return b.String(), keys
}

func TestE2EBurstWithConfiguredLimitsNeverGets429(t *testing.T) {
	skipLong(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	const keys, rpm, requests = 3, 1200, 300
	keyLines, _ := setKeys(t, fake, "burst", keys, fakeopenai.KeyLimits{RPM: rpm})
	startRelay(t, fake, `
		client app {
			key rk-burst-client
		}
		upstream pool {UPSTREAM} {
			rpm 1200
`+keyLines+`		}`)
	// 100 clients keep sending, five times the pool's capacity a second.
	failed, elapsed := burst(t, sdk("rk-burst-client"), requests, "hi", 0, 100)
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, requests)
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered 429 %d times", n)
	}
	// The pool holds one second's worth per key at the start and refills at
	// rpm/60 per second per key.
	perSecond := float64(keys*rpm) / 60
	capacity := perSecond + perSecond*elapsed.Seconds()
	utilisation := float64(requests) / capacity
	t.Logf("%d requests in %v: utilisation %.1f%% of the pool's capacity (%.0f req/s)", requests, elapsed.Round(time.Millisecond), 100*utilisation, perSecond)
	if utilisation < 0.95 {
		t.Errorf("utilisation %.1f%%; want at least 95%%", 100*utilisation)
	}
}

func TestE2ELearnedLimitsKeep429sRare(t *testing.T) {
	skipLong(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	const keys, rpm, requests = 3, 1200, 300
	keyLines, _ := setKeys(t, fake, "learn", keys, fakeopenai.KeyLimits{RPM: rpm})
	startRelay(t, fake, `
		client app {
			key rk-learn-client
		}
		upstream pool {UPSTREAM} {
`+keyLines+`		}
		retries 5`)
	failed, elapsed := burst(t, sdk("rk-learn-client"), requests, "hi", 0, 100)
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, requests)
	}
	limited := fake.RateLimited()
	perSecond := float64(keys*rpm) / 60
	utilisation := float64(requests) / (perSecond + perSecond*elapsed.Seconds())
	t.Logf("limits learned from headers: %d requests in %v, %d upstream 429s (%.1f%%), utilisation %.1f%%",
		requests, elapsed.Round(time.Millisecond), limited, 100*float64(limited)/requests, 100*utilisation)
	if float64(limited) >= 0.02*requests {
		t.Errorf("%d upstream 429s; want under 2%%", limited)
	}
}

func TestE2ETokenBoundBurst(t *testing.T) {
	skipLong(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	const keys, tpm, requests = 2, 120000, 40
	keyLines, _ := setKeys(t, fake, "tpm", keys, fakeopenai.KeyLimits{TPM: tpm})
	startRelay(t, fake, `
		client app {
			key rk-tpm-client
		}
		upstream pool {UPSTREAM} {
			tpm 120000
`+keyLines+`		}`)
	prompt := strings.Repeat("lorem ipsum dolor sit amet ", 60) // about 1,600 characters
	failed, elapsed := burst(t, sdk("rk-tpm-client"), requests, prompt, 50)
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, requests)
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered 429 %d times", n)
	}
	t.Logf("%d requests of ~450 tokens through %d keys of %d TPM in %v", requests, keys, tpm, elapsed.Round(time.Millisecond))
}

func TestE2EMaxWaitGivesRateLimitError(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keyLines, _ := setKeys(t, fake, "wait", 1, fakeopenai.KeyLimits{RPM: 60})
	startRelay(t, fake, `
		client app {
			key rk-wait-client
		}
		upstream pool {UPSTREAM} {
			rpm 60
`+keyLines+`		}
		max_wait 300ms`)
	client := sdk("rk-wait-client")
	var limited atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			var resp *http.Response
			_, err := client.Chat.Completions.New(context.Background(), chatParams("x"), option.WithResponseInto(&resp))
			if err == nil {
				return
			}
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "rate_limit_exceeded" {
				t.Errorf("got %v; want a 429 rate_limit_exceeded", err)
				return
			}
			if ra := apiErr.Response.Header.Get("Retry-After"); ra == "" || ra == "0" {
				t.Errorf("429 without a useful Retry-After: %q", ra)
			}
			limited.Add(1)
		})
	}
	wg.Wait()
	if limited.Load() != 2 {
		t.Errorf("%d requests got 429; want 2 (one request a second, 300ms of wait)", limited.Load())
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered 429 %d times", n)
	}
}

func TestE2EClientLimitsAndHeaders(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keyLines, _ := setKeys(t, fake, "clientlim", 1, fakeopenai.KeyLimits{RPM: 6000})
	startRelay(t, fake, `
		client app {
			key rk-clientlim-client
			rpm 120
			tpm 100000
		}
		upstream pool {UPSTREAM} {
`+keyLines+`		}
		max_wait 100ms`)
	client := sdk("rk-clientlim-client")
	var resp *http.Response
	if _, err := client.Chat.Completions.New(context.Background(), chatParams("x"), option.WithResponseInto(&resp)); err != nil {
		t.Fatal(err)
	}
	h := resp.Header
	if h.Get("X-Ratelimit-Limit-Requests") != "120" || h.Get("X-Ratelimit-Limit-Tokens") != "100000" {
		t.Errorf("client limits not reported: %v", h)
	}
	if h.Get("X-Ratelimit-Remaining-Requests") == "" || h.Get("X-Ratelimit-Reset-Requests") == "" {
		t.Errorf("remaining/reset missing: %v", h)
	}
	// The client may send 2 a second (one second's worth at once): a burst
	// of 6 sees the client's own limit, not the key's.
	failed, _ := burst(t, client, 6, "x", 0)
	if failed < 3 {
		t.Errorf("%d of 6 failed; the client's rpm 120 should refuse most of a burst", failed)
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered 429 %d times", n)
	}
}

func adminGet(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(adminBase + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

type adminKey struct {
	ID            string `json:"id"`
	Upstream      string `json:"upstream"`
	State         string `json:"state"`
	RetiredReason string `json:"retired_reason"`
	PromptTokens  int64  `json:"prompt_tokens"`
	Limits        struct {
		Limits struct {
			RPM int64 `json:"rpm"`
		} `json:"limits"`
	} `json:"limits"`
}

func findKey(t *testing.T, upstream, id string) adminKey {
	t.Helper()
	var keys []adminKey
	adminGet(t, "/openai_relay/keys", &keys)
	for _, k := range keys {
		if k.Upstream == upstream && k.ID == id {
			return k
		}
	}
	t.Fatalf("key %s/%s not in the admin API", upstream, id)
	return adminKey{}
}

func TestE2EDeadKeyRetiredThenRestoredByProbe(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	dead, good := "sk-e2e-probe-dead-0000wxyz", "sk-e2e-probe-good-0000abcd"
	fake.AddKey(dead, fakeopenai.KeyLimits{})
	fake.AddKey(good, fakeopenai.KeyLimits{})
	fake.SetKeyState(dead, fakeopenai.KeyNoQuota)
	t.Setenv("E2E_PROBE_DEAD", dead)
	t.Setenv("E2E_PROBE_GOOD", good)
	e := startRelay(t, fake, `
		client app {
			key rk-probe-client
		}
		upstream probed {UPSTREAM} {
			key {env.E2E_PROBE_DEAD} {
				name dead-one
			}
			key {env.E2E_PROBE_GOOD}
		}
		balance weighted_round_robin
		probe_backoff 500ms`)
	client := sdk("rk-probe-client")
	for range 4 {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("x")); err != nil {
			t.Fatal(err)
		}
	}
	k := findKey(t, "probed", "dead-one")
	if k.State != "retired" || !strings.Contains(k.RetiredReason, "insufficient_quota") {
		t.Fatalf("dead key: state %q reason %q; want retired for insufficient_quota", k.State, k.RetiredReason)
	}
	deadCalls := fake.Count(dead)
	time.Sleep(1200 * time.Millisecond)
	if n := fake.Count(dead) - deadCalls; n > 2 {
		t.Errorf("a dead key got %d probes in 1.2s with a 500ms backoff doubling", n)
	}
	fake.SetKeyState(dead, fakeopenai.KeyOK)
	deadline := time.Now().Add(5 * time.Second)
	for findKey(t, "probed", "dead-one").State != "available" {
		if time.Now().After(deadline) {
			t.Fatal("the key was not restored after it worked again")
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := fake.Served(dead)
	for range 4 {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("x")); err != nil {
			t.Fatal(err)
		}
	}
	if fake.Served(dead) == before {
		t.Error("the restored key serves nothing")
	}
	e.assertNoSecrets([]string{dead, good}, []string{"rk-probe-client"})
}

func TestE2EAdminRetireRestore(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	a, b := "sk-e2e-admin-a-00000000aaaa", "sk-e2e-admin-b-00000000bbbb"
	fake.AddKey(a, fakeopenai.KeyLimits{})
	fake.AddKey(b, fakeopenai.KeyLimits{})
	t.Setenv("E2E_ADMIN_A", a)
	t.Setenv("E2E_ADMIN_B", b)
	startRelay(t, fake, `
		client app {
			key rk-admin-client
		}
		upstream adm {UPSTREAM} {
			key {env.E2E_ADMIN_A}
			key {env.E2E_ADMIN_B}
		}`)
	var keys []adminKey
	adminGet(t, "/openai_relay/keys", &keys)
	raw, _ := json.Marshal(keys)
	if strings.Contains(string(raw), a) || strings.Contains(string(raw), b) {
		t.Fatal("the admin API shows a secret")
	}
	idA := findKey(t, "adm", "sk-…aaaa").ID
	post := func(path string) int {
		resp, err := http.Post(adminBase+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Key a cools down after a 429 (Retry-After 60s); a restore by hand
	// lifts that too.
	client := sdk("rk-admin-client")
	fake.AddFault(fakeopenai.Fault{Status: http.StatusTooManyRequests, Key: a, Count: 1,
		Header: http.Header{"Retry-After": {"60"}}})
	for i := 0; fake.Count(a) == 0 && i < 10; i++ {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("x")); err != nil {
			t.Fatal(err)
		}
	}
	if st := findKey(t, "adm", "sk-…aaaa").State; st != "cooling" {
		t.Fatalf("key a after a 429: %s; want cooling", st)
	}
	if code := post("/openai_relay/keys/" + idA + "/retire"); code != http.StatusOK {
		t.Fatalf("retire: %d", code)
	}
	countA := fake.Count(a)
	for range 6 {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("x")); err != nil {
			t.Fatal(err)
		}
	}
	if n := fake.Count(a) - countA; n != 0 {
		t.Errorf("a retired key served %d requests", n)
	}
	if code := post("/openai_relay/keys/" + idA + "/restore"); code != http.StatusOK {
		t.Fatalf("restore: %d", code)
	}
	if findKey(t, "adm", idA).State != "available" {
		t.Error("not restored")
	}
	if code := post("/openai_relay/keys/no-such-key/retire"); code != http.StatusNotFound {
		t.Errorf("unknown key: %d; want 404", code)
	}
	var clients []struct {
		Name     string `json:"name"`
		Requests int64  `json:"requests"`
	}
	adminGet(t, "/openai_relay/clients", &clients)
	found := false
	for _, c := range clients {
		found = found || (c.Name == "app" && c.Requests >= 6)
	}
	if !found {
		t.Errorf("clients: %+v", clients)
	}
}

func TestE2EStreamUsageIsAccountedAndHidden(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := "sk-e2e-streamusage-0000uuuu"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	t.Setenv("E2E_STREAMUSAGE", k)
	startRelay(t, fake, `
		client app {
			key rk-streamusage-client
		}
		upstream su {UPSTREAM} {
			key {env.E2E_STREAMUSAGE} {
				name su-key
			}
		}`)
	stream := func(includeUsage bool) string {
		body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"count my tokens please"}]}`
		if includeUsage {
			body = `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count my tokens please"}]}`
		}
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer rk-streamusage-client")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		return string(out)
	}
	plain := stream(false)
	if strings.Contains(plain, `"usage"`) {
		t.Errorf("a client that did not ask for usage sees it:\n%s", plain)
	}
	if !strings.HasSuffix(plain, "data: [DONE]\n\n") || strings.Count(plain, "chat.completion.chunk") < 3 {
		t.Errorf("stream damaged:\n%s", plain)
	}
	recs := fake.Records()
	if !strings.Contains(string(recs[len(recs)-1].Body), `"include_usage":true`) {
		t.Errorf("the relay did not ask the upstream for usage: %s", recs[len(recs)-1].Body)
	}
	if findKey(t, "su", "su-key").PromptTokens == 0 {
		t.Error("the stream's usage was not accounted")
	}
	withUsage := stream(true)
	if !strings.Contains(withUsage, `"usage":{`) {
		t.Errorf("a client that asked for usage does not get it:\n%s", withUsage)
	}
}

func TestE2EBudgetAndSpend(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keyLines, _ := setKeys(t, fake, "budget", 1, fakeopenai.KeyLimits{})
	startRelay(t, fake, `
		client app {
			key rk-budget-client
			budget 0.001 daily
		}
		upstream pool {UPSTREAM} {
`+keyLines+`		}
		price gpt-4o-mini* 100 100`)
	client := sdk("rk-budget-client")
	// About 10 tokens at $100 a million: $0.001 is spent within a few requests.
	var err error
	sent := 0
	for sent < 20 {
		if _, err = client.Chat.Completions.New(context.Background(), chatParams("spend some money")); err != nil {
			break
		}
		sent++
	}
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "insufficient_quota" {
		t.Fatalf("after %d requests: %v; want a 429 insufficient_quota once the budget is spent", sent, err)
	}
	if sent == 0 {
		t.Fatal("the first request was refused")
	}
	if n := fake.Count(fake.Records()[0].Key); n != sent {
		t.Errorf("upstream saw %d requests; the refused one must not reach it (%d served)", n, sent)
	}
	resp, err := http.Get(adminBase + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `caddy_openai_relay_spend_usd_total{client="app"}`) {
		t.Error("no spend metric for the client")
	}
}

// TestE2EResponsesStickToTheirKey checks that a Responses request continuing
// an earlier response goes to the key (the organisation) that created it.
func TestE2EResponsesStickToTheirKey(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keyLines, keys := setKeys(t, fake, "sticky", 3, fakeopenai.KeyLimits{})
	startRelay(t, fake, `
		client app {
			key rk-sticky-client
		}
		upstream orgs {UPSTREAM} {
`+keyLines+`		}
		balance weighted_round_robin`)
	for _, stream := range []bool{false, true} {
		fake.ResetRecords()
		body := `{"model":"gpt-4o-mini","input":"remember me"` + map[bool]string{true: `,"stream":true`, false: ``}[stream] + `}`
		code, _, out := rawPost(t, "rk-sticky-client", "/responses", body)
		if code != 200 {
			t.Fatalf("%d %s", code, out)
		}
		id := ""
		if stream {
			i := strings.Index(out, `"id":"resp_`)
			if i < 0 {
				t.Fatalf("no response id in the stream: %.300s", out)
			}
			id = out[i+6 : i+6+strings.Index(out[i+6:], `"`)]
		} else {
			id = idOf(t, out)
		}
		owner := fake.Records()[0].Key
		for range 6 {
			code, _, out := rawPost(t, "rk-sticky-client", "/responses", `{"model":"gpt-4o-mini","input":"and now?","previous_response_id":"`+id+`"}`)
			if code != 200 {
				t.Fatalf("%d %s", code, out)
			}
		}
		for _, rec := range fake.Records()[1:] {
			if rec.Key != owner {
				t.Fatalf("stream=%v: a continuation of %s went to another key than the one that created it", stream, id)
			}
		}
		// Without previous_response_id the keys take turns as usual.
		used := map[string]bool{}
		for range 3 {
			rawPost(t, "rk-sticky-client", "/responses", `{"model":"gpt-4o-mini","input":"fresh"}`)
		}
		for _, rec := range fake.Records()[7:] {
			used[rec.Key] = true
		}
		if len(used) < 2 {
			t.Errorf("fresh requests all went to one key of %d", len(keys))
		}
	}
}
