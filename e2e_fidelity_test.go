package openairelay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The fidelity tests check the relay against the strict fake: usage read
// from every framing of an answer, limits learned from the minute headers,
// keys retired only for what is wrong with the key, no 429 storm after a
// cool-down, and requests too large for any key refused locally.

// fidelityKey is a key as GET /openai_relay/keys shows it, with the fields
// these tests read besides adminKey's.
type fidelityKey struct {
	adminKey
	OutputTokens int64      `json:"completion_tokens"`
	CoolingUntil *time.Time `json:"cooling_until"`
}

// upstreamKeys returns the keys of one upstream from the admin API.
func upstreamKeys(t *testing.T, upstream string) []fidelityKey {
	t.Helper()
	var all, out []fidelityKey
	adminGet(t, "/openai_relay/keys", &all)
	for _, k := range all {
		if k.Upstream == upstream {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		t.Fatalf("upstream %s has no key in the admin API", upstream)
	}
	return out
}

// tokenUsage is a count of prompt (input) and completion (output) tokens.
type tokenUsage struct{ prompt, completion int64 }

func (u *tokenUsage) add(v tokenUsage) {
	u.prompt += v.prompt
	u.completion += v.completion
}

// wireUsage is a usage object of any endpoint.
type wireUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
}

// usageIn reads the usage an answer reports: a JSON answer's top-level
// usage, or in an event stream the last usage object of a chat chunk or of a
// Responses event's response.
func usageIn(body []byte) (tokenUsage, bool) {
	var u tokenUsage
	found := false
	read := func(b []byte) {
		var v struct {
			Usage    *wireUsage `json:"usage"`
			Response *struct {
				Usage *wireUsage `json:"usage"`
			} `json:"response"`
		}
		if json.Unmarshal(b, &v) != nil {
			return
		}
		w := v.Usage
		if v.Response != nil && v.Response.Usage != nil {
			w = v.Response.Usage
		}
		if w == nil {
			return
		}
		u = tokenUsage{w.PromptTokens + w.InputTokens, w.CompletionTokens + w.OutputTokens}
		found = true
	}
	if b := bytes.TrimSpace(body); len(b) > 0 && b[0] == '{' {
		read(b)
		return u, found
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && data != "[DONE]" {
			read([]byte(data))
		}
	}
	return u, found
}

// replayUsage sends a request the fake recorded again, as it reached the
// fake, straight to the fake with another key, and returns the usage the
// fake answers: the fake's answers are deterministic from the request, so
// this is the usage it reported to the relay, even where the client saw
// none.
func replayUsage(t *testing.T, fake *fakeopenai.Server, rec fakeopenai.Record, key string) tokenUsage {
	t.Helper()
	req, _ := http.NewRequest(rec.Method, strings.TrimSuffix(fake.URL(), "/v1")+rec.Path, bytes.NewReader(rec.Body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	u, ok := usageIn(body)
	if resp.StatusCode != http.StatusOK || !ok {
		t.Fatalf("replay of %s: %d, no usage in %.300s", rec.Path, resp.StatusCode, body)
	}
	return u
}

// fidelityPrices are the prices of the usage tests' relay, by model.
const fidelityPrices = `
		price gpt-4o-mini* 1 3
		price text-embedding-* 0.5 0`

func fidelityCost(model string, u tokenUsage) float64 {
	if strings.HasPrefix(model, "text-embedding-") {
		return float64(u.prompt) * 0.5 / 1e6
	}
	return (float64(u.prompt)*1 + float64(u.completion)*3) / 1e6
}

// usageMix sends chat completions, chat streams with and without
// include_usage, Responses calls (plain and streamed) and embeddings, and
// returns the usage the client saw and how many requests it sent. Prompts of
// streams whose client does not see usage contain "hidden".
func usageMix(t *testing.T, client openai.Client) (seen tokenUsage, sent int) {
	t.Helper()
	ctx := context.Background()
	for i, prompt := range []string{"hello relay", "count these few words for me please", "a longer prompt of ten words that the fake echoes", "truncate me after three words please"} {
		p := chatParams(prompt)
		if i == 3 {
			p.MaxTokens = openai.Int(3)
		}
		res, err := client.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatalf("chat %d: %v", i, err)
		}
		if res.Usage.PromptTokens == 0 || res.Usage.CompletionTokens == 0 {
			t.Errorf("chat %d: usage %+v", i, res.Usage)
		}
		seen.add(tokenUsage{res.Usage.PromptTokens, res.Usage.CompletionTokens})
		sent++
	}
	for i, prompt := range []string{"stream with usage please", "hidden usage stream one", "another streamed answer with usage", "hidden usage stream two with more words"} {
		p := chatParams(prompt)
		include := !strings.Contains(prompt, "hidden")
		if include {
			p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		}
		stream := client.Chat.Completions.NewStreaming(ctx, p)
		var u tokenUsage
		chunks := 0
		for stream.Next() {
			c := stream.Current()
			chunks++
			if c.Usage.TotalTokens > 0 {
				u = tokenUsage{c.Usage.PromptTokens, c.Usage.CompletionTokens}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("chat stream %d: %v", i, err)
		}
		switch {
		case chunks < 3:
			t.Errorf("chat stream %d: %d chunks", i, chunks)
		case include && u.prompt == 0:
			t.Errorf("chat stream %d asked for usage and got none", i)
		case !include && u != (tokenUsage{}):
			t.Errorf("chat stream %d did not ask for usage and got %+v", i, u)
		}
		seen.add(u)
		sent++
	}
	for i, input := range []string{"respond please", "respond to this somewhat longer input"} {
		res, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(input)},
		})
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if res.Usage.InputTokens == 0 || res.Usage.OutputTokens == 0 {
			t.Errorf("response %d: usage %+v", i, res.Usage)
		}
		seen.add(tokenUsage{res.Usage.InputTokens, res.Usage.OutputTokens})
		sent++
	}
	for i, input := range []string{"stream a response", "stream a response of a few more words"} {
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(input)},
		})
		var u tokenUsage
		for stream.Next() {
			if ev := stream.Current(); ev.Type == "response.completed" {
				u = tokenUsage{ev.Response.Usage.InputTokens, ev.Response.Usage.OutputTokens}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("response stream %d: %v", i, err)
		}
		if u.prompt == 0 || u.completion == 0 {
			t.Errorf("response stream %d: usage %+v", i, u)
		}
		seen.add(u)
		sent++
	}
	for i, input := range []openai.EmbeddingNewParamsInputUnion{
		{OfString: openai.String("embed these words")},
		{OfArrayOfStrings: []string{"one input", "and a second, longer, input"}},
	} {
		res, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "text-embedding-3-small", Input: input})
		if err != nil {
			t.Fatalf("embedding %d: %v", i, err)
		}
		if res.Usage.PromptTokens == 0 {
			t.Errorf("embedding %d: usage %+v", i, res.Usage)
		}
		seen.add(tokenUsage{res.Usage.PromptTokens, 0})
		sent++
	}
	return seen, sent
}

// relayCounts is what the relay counted for an upstream's keys and a client.
type relayCounts struct {
	admin, metrics tokenUsage
	spent          float64
}

func readRelayCounts(t *testing.T, upstream, client string) relayCounts {
	t.Helper()
	var c relayCounts
	for _, k := range upstreamKeys(t, upstream) {
		c.admin.add(tokenUsage{k.PromptTokens, k.OutputTokens})
		series := func(kind string) string {
			return fmt.Sprintf(`caddy_openai_relay_tokens_total{key=%q,kind=%q,upstream=%q}`, k.ID, kind, upstream)
		}
		c.metrics.add(tokenUsage{int64(metricSum(t, series("prompt"))), int64(metricSum(t, series("completion")))})
	}
	var clients []clientSpend
	adminGet(t, "/openai_relay/clients", &clients)
	for _, cl := range clients {
		if cl.Name == client {
			c.spent = cl.SpentMonth
		}
	}
	return c
}

type clientSpend struct {
	Name       string  `json:"name"`
	SpentMonth float64 `json:"spent_usd_this_month"`
}

// fidelityPool is one test's fake, relay, keys and client.
type fidelityPool struct {
	fake   *fakeopenai.Server
	e      *e2e
	keys   []string
	client openai.Client
}

// startPool starts a fake holding n keys of the limits given and a relay
// with one client and one upstream, both called name (the client's key is
// rk-<name>-client); upstreamLines go in the upstream's block, relayLines in
// the relay's.
func startPool(t *testing.T, opts fakeopenai.Options, name string, n int, lim fakeopenai.KeyLimits, upstreamLines, relayLines string) fidelityPool {
	t.Helper()
	fake := fakeopenai.New(opts)
	t.Cleanup(fake.Close)
	keyLines, keys := setKeys(t, fake, name, n, lim)
	e := startRelay(t, fake, `
		client `+name+` {
			key rk-`+name+`-client
		}
		upstream `+name+` {UPSTREAM} {
			`+upstreamLines+`
`+keyLines+`		}
`+relayLines)
	return fidelityPool{fake: fake, e: e, keys: keys, client: sdk("rk-" + name + "-client")}
}

// TestE2EFidelityUsageCountedHoweverFramed checks that the tokens the
// upstream reported are counted exactly, in the admin API, the metrics and
// the client's spend, whatever the framing of the answers: compressed and
// chunked (the strict default), or plain with a Content-Length.
func TestE2EFidelityUsageCountedHoweverFramed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plain bool
	}{
		{"strict", false},
		{"plain", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "fidusage" + tc.name
			pool := startPool(t, fakeopenai.Options{NoCompression: tc.plain, ContentLength: tc.plain}, name, 2, fakeopenai.KeyLimits{}, "",
				"\t\tbalance weighted_round_robin"+fidelityPrices)
			fake, keys := pool.fake, pool.keys
			oracle := "sk-" + name + "-oracle-0000zzzz"
			fake.AddKey(oracle, fakeopenai.KeyLimits{})
			seen, sent := usageMix(t, pool.client)

			recs := waitRecords(fake, sent)
			if len(recs) != sent {
				t.Fatalf("the upstream saw %d requests; want %d", len(recs), sent)
			}
			var want, visible tokenUsage
			var spend float64
			for _, rec := range recs {
				if rec.Status != http.StatusOK {
					t.Fatalf("%s answered %d", rec.Path, rec.Status)
				}
				if !tc.plain && !rec.Stream && !strings.Contains(rec.Header.Get("Accept-Encoding"), "gzip") {
					t.Errorf("%s reached the upstream without Accept-Encoding gzip: the answer was not compressed", rec.Path)
				}
				u := replayUsage(t, fake, rec, oracle)
				want.add(u)
				spend += fidelityCost(rec.Model, u)
				if !bytes.Contains(rec.Body, []byte("hidden")) {
					visible.add(u)
				}
			}
			if visible != seen {
				t.Fatalf("the client saw usage %+v where the upstream answered %+v", seen, visible)
			}
			if want == visible {
				t.Fatal("the streams without include_usage reported nothing upstream")
			}

			// The relay counts an answer once it has passed it on: give it
			// a moment to settle the last one.
			var got relayCounts
			for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				got = readRelayCounts(t, name, name)
				if (got.admin == want && got.metrics == want) || time.Now().After(deadline) {
					break
				}
			}
			t.Logf("%d requests: upstream reported %d prompt and %d completion tokens, $%.6f", sent, want.prompt, want.completion, spend)
			if got.admin != want {
				t.Errorf("admin API keys count %+v; the upstream reported %+v", got.admin, want)
			}
			if got.metrics != want {
				t.Errorf("caddy_openai_relay_tokens_total counts %+v; the upstream reported %+v", got.metrics, want)
			}
			if math.Abs(got.spent-spend) > 1e-12 {
				t.Errorf("the client spent $%.9f by the admin API; the prices of the reported usage make $%.9f", got.spent, spend)
			}
			pool.e.assertNoSecrets(keys, []string{"rk-" + name + "-client"})
		})
	}
}

// keyAttempts is how many requests the fake got with the keys.
func keyAttempts(fake *fakeopenai.Server, keys []string) int {
	n := 0
	for _, k := range keys {
		n += fake.Count(k)
	}
	return n
}

// TestE2EFidelityLearnedLimitsHold runs loads at concurrency 16 and 64
// through keys whose limits the relay only learns from the upstream's
// minute headers, and wants them used to the full, with 429s rare.
func TestE2EFidelityLearnedLimitsHold(t *testing.T) {
	skipLong(t)
	const nkeys, rpm, requests = 2, 600, 160
	pool := startPool(t, fakeopenai.Options{}, "fidlearn", nkeys, fakeopenai.KeyLimits{RPM: rpm}, "", "\t\tretries 3")
	fake, keys, client := pool.fake, pool.keys, pool.client
	fake.SetRecording(false)
	for i := range 4 {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("warm up")); err != nil {
			t.Fatalf("warm-up %d: %v", i, err)
		}
	}
	for _, k := range upstreamKeys(t, "fidlearn") {
		if k.Limits.Limits.RPM != rpm {
			t.Errorf("key %s: RPM %d after the warm-up; want %d learned from the headers", k.ID, k.Limits.Limits.RPM, rpm)
		}
	}
	// The fake's buckets hold one second's worth and refill at rpm/60 a
	// second per key.
	perSecond := float64(nkeys*rpm) / 60
	capacity := perSecond
	for _, workers := range []int{16, 64} {
		time.Sleep(1100 * time.Millisecond) // every bucket full again
		attempts0, limited0 := keyAttempts(fake, keys), fake.RateLimited()
		failed, elapsed := burst(t, client, requests, "hi", 0, workers)
		attempts, limited := keyAttempts(fake, keys)-attempts0, fake.RateLimited()-limited0
		utilisation := requests / (capacity + perSecond*elapsed.Seconds())
		t.Logf("concurrency %d: %d requests in %v, %d attempts, %d upstream 429s, utilisation %.1f%%",
			workers, requests, elapsed.Round(time.Millisecond), attempts, limited, 100*utilisation)
		if failed > 0 {
			t.Errorf("concurrency %d: %d of %d requests failed", workers, failed, requests)
		}
		if float64(limited) >= 0.01*float64(attempts) {
			t.Errorf("concurrency %d: %d upstream 429s in %d attempts; want under 1%%", workers, limited, attempts)
		}
		if utilisation < 0.95 {
			t.Errorf("concurrency %d: utilisation %.1f%%; want at least 95%%", workers, 100*utilisation)
		}
	}
}

// TestE2EFidelitySlowKeysNever429 sends 20 requests from 8 workers through
// keys of 60 RPM, a bucket of a single request, configured as such.
func TestE2EFidelitySlowKeysNever429(t *testing.T) {
	skipLong(t)
	const requests = 20
	pool := startPool(t, fakeopenai.Options{}, "fidslow", 4, fakeopenai.KeyLimits{RPM: 60}, "rpm 60", "")
	fake, keys := pool.fake, pool.keys
	failed, elapsed := burst(t, pool.client, requests, "slowly", 0, 8)
	t.Logf("%d requests in %v", requests, elapsed.Round(time.Millisecond))
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, requests)
	}
	if n := fake.RateLimited(); n != 0 {
		t.Errorf("the upstream answered 429 %d times", n)
	}
	if n := keyAttempts(fake, keys); n != requests {
		t.Errorf("the upstream got %d requests; want %d", n, requests)
	}
}

// apiErrorOf returns the SDK's error for a status, failing the test when err
// is something else.
func apiErrorOf(t *testing.T, err error, status int, what string) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
		t.Fatalf("%s: got %v; want the upstream's %d", what, err, status)
	}
	return apiErr
}

// TestE2EFidelityRequestErrorsRetireNothing sends requests the keys may not
// make (a model their project may not use, an endpoint whose scope the
// restricted keys lack): the upstream's 403 and 401 reach the client as they
// are, are not retried on the other key, and retire nothing, while another
// client's requests keep being served.
func TestE2EFidelityRequestErrorsRetireNothing(t *testing.T) {
	pool := startPool(t, fakeopenai.Options{}, "fidperm", 2, fakeopenai.KeyLimits{}, "", `
		client fidpermb {
			key rk-fidperm-b
		}
		balance weighted_round_robin`)
	fake, keys := pool.fake, pool.keys
	for _, k := range keys {
		fake.ConfigureKey(k, fakeopenai.KeyConfig{
			Models: []string{"gpt-4o-mini"},
			Scopes: []string{fakeopenai.ScopeModelRequest, fakeopenai.ScopeModelRead},
		})
	}
	a, b := pool.client, sdk("rk-fidperm-b")
	ctx := context.Background()

	// Client B's gpt-4o-mini requests go between A's.
	bServed := 0
	bRequest := func() {
		t.Helper()
		if _, err := b.Chat.Completions.New(ctx, chatParams("b is served")); err != nil {
			t.Errorf("client B, after %d served: %v", bServed, err)
			return
		}
		bServed++
	}

	const modelRequests, scopeRequests = 6, 4
	for i := range modelRequests {
		_, err := a.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a wants gpt-4o")},
		})
		apiErr := apiErrorOf(t, err, http.StatusForbidden, fmt.Sprintf("gpt-4o request %d", i))
		if apiErr.Code != "model_not_found" || !strings.Contains(apiErr.Message, "does not have access to model") {
			t.Errorf("gpt-4o request %d: code %q message %q; want the upstream's model_not_found", i, apiErr.Code, apiErr.Message)
		}
		bRequest()
	}
	for i := range scopeRequests {
		_, err := a.Responses.New(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("a wants a response")},
		})
		apiErr := apiErrorOf(t, err, http.StatusUnauthorized, fmt.Sprintf("responses request %d", i))
		if !strings.Contains(apiErr.Message, "insufficient permissions") || !strings.Contains(apiErr.Message, fakeopenai.ScopeResponsesWrite) {
			t.Errorf("responses request %d: message %q; want the upstream's missing scope", i, apiErr.Message)
		}
		bRequest()
	}

	gpt4o, resp, probes := 0, 0, 0
	for _, rec := range fake.Records() {
		switch {
		case rec.Model == "gpt-4o":
			gpt4o++
		case rec.Path == "/v1/responses":
			resp++
		case rec.Method == http.MethodGet && rec.Path == "/v1/models":
			probes++
		}
	}
	if gpt4o != modelRequests {
		t.Errorf("the upstream got %d gpt-4o requests for %d sent: a 403 about the model was retried", gpt4o, modelRequests)
	}
	if resp != scopeRequests {
		t.Errorf("the upstream got %d responses requests for %d sent: a 401 about a scope was retried", resp, scopeRequests)
	}
	if probes != 0 {
		t.Errorf("%d probes of keys whose only errors were about the request", probes)
	}
	for _, k := range upstreamKeys(t, "fidperm") {
		if k.State != "available" {
			t.Errorf("key %s is %s (%s) after errors about the request only", k.ID, k.State, k.RetiredReason)
		}
	}
	// Both keys still take their turns.
	for range 4 {
		bRequest()
	}
	if n := fake.Served(keys[0]) + fake.Served(keys[1]); n != bServed || bServed != modelRequests+scopeRequests+4 {
		t.Errorf("client B was served %d times, the keys served %d; want %d", bServed, n, modelRequests+scopeRequests+4)
	}
	for i, k := range keys {
		if fake.Served(k) == 0 {
			t.Errorf("key %d served nothing to client B", i)
		}
	}
}

// TestE2EFidelityDeadKeysRetiredAndRetried puts a key that is dead for the
// upstream (invalid, deactivated, out of quota) in front of a good one: the
// request it fails is retried on the good key and succeeds, and the dead key
// is retired after its one request.
func TestE2EFidelityDeadKeysRetiredAndRetried(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	t.Cleanup(fake.Close)
	cases := []struct {
		name   string
		state  fakeopenai.KeyState
		reason string
	}{
		{"fidinvalid", fakeopenai.KeyInvalid, "401 invalid_api_key"},
		{"fiddeact", fakeopenai.KeyDeactivated, "401 account_deactivated"},
		{"fidquota", fakeopenai.KeyNoQuota, "429 insufficient_quota"},
	}
	var config strings.Builder
	secrets := map[string][]string{}
	for _, c := range cases {
		keyLines, keys := setKeys(t, fake, c.name, 2, fakeopenai.KeyLimits{})
		fake.SetKeyState(keys[0], c.state)
		secrets[c.name] = keys
		fmt.Fprintf(&config, `
		client %[1]s {
			key rk-%[1]s-client
			upstreams %[1]s
		}
		upstream %[1]s {UPSTREAM} {
%[2]s		}`, c.name, keyLines)
	}
	startRelay(t, fake, config.String()+`
		balance weighted_round_robin`)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dead, good := secrets[c.name][0], secrets[c.name][1]
			client := sdk("rk-" + c.name + "-client")
			const requests = 4
			for i := range requests {
				if _, err := client.Chat.Completions.New(context.Background(), chatParams("retry me elsewhere")); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			if n := fake.Count(dead); n != 1 {
				t.Errorf("the dead key got %d requests; want 1 (retired after it)", n)
			}
			if n, s := fake.Count(good), fake.Served(good); n != requests || s != requests {
				t.Errorf("the good key got %d requests and served %d; want %d", n, s, requests)
			}
			assertOneRetired(t, upstreamKeys(t, c.name), c.reason)
		})
	}
}

// assertOneRetired checks that exactly one key of an upstream is retired,
// for reason, and that the others are available.
func assertOneRetired(t *testing.T, keys []fidelityKey, reason string) {
	t.Helper()
	retired := 0
	for _, k := range keys {
		switch k.State {
		case "retired":
			retired++
			if !strings.Contains(k.RetiredReason, reason) {
				t.Errorf("key %s retired for %q; want %s", k.ID, k.RetiredReason, reason)
			}
		case "available":
		default:
			t.Errorf("key %s is %s", k.ID, k.State)
		}
	}
	if retired != 1 {
		t.Errorf("%d keys retired; want 1 (for %s)", retired, reason)
	}
}

// TestE2EFidelityUnknownForbiddenConfirmedByProbe: a 403 that names neither
// the key nor the request reaches the client as it is, and the key is
// retired only once a probe of it fails the same way.
func TestE2EFidelityUnknownForbiddenConfirmedByProbe(t *testing.T) {
	pool := startPool(t, fakeopenai.Options{}, "fidforbid", 2, fakeopenai.KeyLimits{}, "", "\t\tbalance weighted_round_robin")
	fake, client := pool.fake, pool.client
	forbidden, good := pool.keys[0], pool.keys[1]
	fake.SetKeyState(forbidden, fakeopenai.KeyForbidden)
	var err error
	served := 0
	for range 4 {
		if _, err = client.Chat.Completions.New(context.Background(), chatParams("where am I")); err != nil {
			break
		}
		served++
	}
	apiErr := apiErrorOf(t, err, http.StatusForbidden, "the request on the forbidden key")
	if apiErr.Code != "unsupported_country_region_territory" {
		t.Errorf("code %q; want the upstream's unsupported_country_region_territory", apiErr.Code)
	}
	if n := fake.Count(good); n != served {
		t.Errorf("the good key got %d requests for %d served: the 403 was retried", n, served)
	}
	// The key stays in rotation until its probe fails the same way.
	var states []fidelityKey
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		states = upstreamKeys(t, "fidforbid")
		if states[0].State == "retired" || states[1].State == "retired" || time.Now().After(deadline) {
			break
		}
	}
	assertOneRetired(t, states, "403 unsupported_country_region_territory")
	probed := false
	for _, rec := range fake.Records() {
		probed = probed || (rec.Key == forbidden && rec.Method == http.MethodGet && rec.Path == "/v1/models" && rec.Status == http.StatusForbidden)
	}
	if !probed {
		t.Error("the key was retired without a probe")
	}
	// Requests go to the good key now.
	for i := range 3 {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("elsewhere")); err != nil {
			t.Fatalf("request %d after the retirement: %v", i, err)
		}
	}
	if n := fake.Count(forbidden); n != 2 {
		t.Errorf("the forbidden key got %d requests; want 2 (the request, the probe)", n)
	}
}

// TestE2EFidelityNo429StormAfterCoolDown has another user of a key empty
// its upstream bucket, so that the relay's next request gets a 429, and then
// sends a burst through the relay: after the cool-down the relay sends one
// request at the reset, not a bucketful, and paces the rest, so that the
// upstream answers 429 once or twice, not a storm. The key's limits are
// configured in the relay, or learned from the 429 itself.
func TestE2EFidelityNo429StormAfterCoolDown(t *testing.T) {
	skipLong(t)
	for _, tc := range []struct {
		name, limits string
	}{
		{"fidcoolconf", "tpm 6000"},
		{"fidcoollearn", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A bucket of 100 tokens refilling at 100 a second; a relayed
			// request costs 11 (a token of prompt, 10 allowed).
			const requests, maxTokens = 20, 10
			pool := startPool(t, fakeopenai.Options{}, tc.name, 1, fakeopenai.KeyLimits{TPM: 6000}, tc.limits, "\t\tretries 4")
			fake, client, key := pool.fake, pool.client, pool.keys[0]
			// The other user's request of 200 tokens, admitted on the full
			// bucket, leaves it 100 in debt: a second before the next fits.
			other := openai.NewClient(option.WithBaseURL(fake.URL()), option.WithAPIKey(key), option.WithMaxRetries(0))
			if _, err := other.Chat.Completions.New(context.Background(), chatParams(strings.Repeat("abcd", 200))); err != nil {
				t.Fatalf("the other user's request: %v", err)
			}
			p := chatParams("x")
			p.MaxTokens = openai.Int(maxTokens)
			if _, err := client.Chat.Completions.New(context.Background(), p); err != nil {
				t.Fatalf("the relay's request after a 429: %v", err)
			}
			if fake.RateLimited() != 1 {
				t.Fatalf("the relay's first request met %d 429s; want 1 (the bucket was in debt)", fake.RateLimited())
			}
			failed, elapsed := burst(t, client, requests, "x", maxTokens, requests)
			limited := fake.RateLimited()
			attempts := fake.Count(key) - 1
			t.Logf("a burst of %d requests in %v; %d upstream 429s in %d relayed attempts", requests, elapsed.Round(time.Millisecond), limited, attempts)
			if failed > 0 {
				t.Errorf("%d of %d requests failed", failed, requests)
			}
			if limited < 1 || limited > 2 {
				t.Errorf("the upstream answered the relay 429 %d times; want 1 or 2 (the bucket in debt found, then one request at the reset)", limited)
			}
			if attempts != requests+1+limited {
				t.Errorf("the relay made %d attempts for %d requests and %d 429s", attempts, requests+1, limited)
			}
		})
	}
}

// TestE2EFidelityRequestTooLarge sends a request whose prompt and max tokens
// exceed the key's whole minute TPM, configured or learned: the relay answers
// OpenAI's "Request too large" itself, sends nothing upstream and cools
// nothing.
func TestE2EFidelityRequestTooLarge(t *testing.T) {
	for _, tc := range []struct {
		name, limits string
	}{
		{"fidbigconf", "tpm 1000"},
		{"fidbiglearn", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := startPool(t, fakeopenai.Options{}, tc.name, 1, fakeopenai.KeyLimits{TPM: 1000}, tc.limits, "\t\tmax_wait 2s")
			fake, client, keys := pool.fake, pool.client, pool.keys
			sent := 0
			if tc.limits == "" {
				// The key's TPM is learned from a first answer.
				if _, err := client.Chat.Completions.New(context.Background(), chatParams("teach me")); err != nil {
					t.Fatal(err)
				}
				sent++
			}
			// 4,000 characters, about 1,000 tokens, and 100 more allowed.
			body, _ := json.Marshal(map[string]any{
				"model":      "gpt-4o-mini",
				"max_tokens": 100,
				"messages":   []map[string]string{{"role": "user", "content": strings.Repeat("word ", 800)}},
			})
			code, header, out := rawPost(t, "rk-"+tc.name+"-client", "/chat/completions", string(body))
			var env struct {
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			_ = json.Unmarshal([]byte(out), &env)
			if code != http.StatusTooManyRequests || !isOpenAIError([]byte(out)) || !strings.HasPrefix(env.Error.Message, "Request too large") {
				t.Errorf("got %d %.300s; want a 429 \"Request too large\" in OpenAI's error shape", code, out)
			}
			if ra := header.Get("Retry-After"); ra != "" {
				t.Errorf("Retry-After %q on a request that no wait would let through", ra)
			}
			if n := fake.Count(keys[0]); n != sent {
				t.Errorf("the upstream got %d requests; want %d (the refused one must not reach it)", n, sent)
			}
			if k := upstreamKeys(t, tc.name)[0]; k.State != "available" || k.CoolingUntil != nil {
				t.Errorf("key %s: state %q cooling until %v after a request too large; want available", k.ID, k.State, k.CoolingUntil)
			}
			if _, err := client.Chat.Completions.New(context.Background(), chatParams("a normal request")); err != nil {
				t.Errorf("a normal request after the refused one: %v", err)
			}
			if n := fake.Count(keys[0]); n != sent+1 {
				t.Errorf("the upstream got %d requests; want %d", n, sent+1)
			}
			if n := fake.RateLimited(); n != 0 {
				t.Errorf("the upstream answered 429 %d times", n)
			}
		})
	}
}
