package openairelay_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

func TestE2EDeadKeysAndServerErrorsAreRetried(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keys := map[string]string{
		"E2E_DEAD":   "sk-e2e-retry-dead-000000001",
		"E2E_QUOTA":  "sk-e2e-retry-quota-00000002",
		"E2E_GOOD":   "sk-e2e-retry-good-000000003",
		"E2E_OTHER":  "sk-e2e-retry-other-00000004",
		"E2E_COOLER": "sk-e2e-retry-cooler-0000005",
	}
	for env, k := range keys {
		fake.AddKey(k, fakeopenai.KeyLimits{})
		t.Setenv(env, k)
	}
	fake.SetKeyState(keys["E2E_DEAD"], fakeopenai.KeyInvalid)
	fake.SetKeyState(keys["E2E_QUOTA"], fakeopenai.KeyNoQuota)
	e := startRelay(t, fake, `
		client app {
			key rk-retry-client
		}
		upstream primary {UPSTREAM} {
			key {env.E2E_DEAD}
			key {env.E2E_QUOTA}
			key {env.E2E_GOOD}
			key {env.E2E_COOLER}
		}
		upstream secondary {UPSTREAM} {
			key {env.E2E_OTHER}
		}
		balance weighted_round_robin
		retries 4`)
	// The good key of the primary fails once with a 502, the cooler once
	// with a 429: both must be invisible to the client.
	fake.AddFault(fakeopenai.Fault{Status: http.StatusBadGateway, Key: keys["E2E_GOOD"], Count: 1})
	fake.AddFault(fakeopenai.Fault{Status: http.StatusTooManyRequests, Key: keys["E2E_COOLER"], Count: 1})

	client := sdk("rk-retry-client")
	for i := range 20 {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("retry me")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if n := fake.Count(keys["E2E_DEAD"]); n != 1 {
		t.Errorf("the invalid key was used %d times; want 1 (retired after its 401)", n)
	}
	if n := fake.Count(keys["E2E_QUOTA"]); n != 1 {
		t.Errorf("the key without quota was used %d times; want 1", n)
	}
	if n := fake.Count(keys["E2E_COOLER"]); n != 1 {
		t.Errorf("the rate-limited key was used %d times in its 10s cooldown; want 1", n)
	}
	served := fake.Served(keys["E2E_GOOD"]) + fake.Served(keys["E2E_OTHER"])
	if served != 20 {
		t.Errorf("served %d; want 20", served)
	}
	e.assertNoSecrets(mapValues(keys), []string{"rk-retry-client"})
}

func TestE2EAllKeysDeadGivesClearError(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	dead := "sk-e2e-alldead-key-abcdefgh"
	fake.AddKey(dead, fakeopenai.KeyLimits{})
	fake.SetKeyState(dead, fakeopenai.KeyInvalid)
	t.Setenv("E2E_ALLDEAD", dead)
	e := startRelay(t, fake, `
		client app {
			key rk-alldead-client
		}
		upstream only {UPSTREAM} {
			key {env.E2E_ALLDEAD}
		}`)
	client := sdk("rk-alldead-client")
	for range 2 {
		_, err := client.Chat.Completions.New(context.Background(), chatParams("anyone?"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %v; want 503", err)
		}
		raw := apiErr.RawJSON()
		if strings.Contains(raw, dead) || strings.Contains(raw, fakeopenai.MaskKey(dead)) || strings.Contains(raw, dead[len(dead)-4:]) {
			t.Errorf("error body shows the key: %s", raw)
		}
	}
	if n := fake.Count(dead); n != 1 {
		t.Errorf("dead key used %d times; want 1", n)
	}
	e.assertNoSecrets([]string{dead}, nil)
}

func TestE2EServerErrorPassedOnWhenRetriesRunOut(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := "sk-e2e-5xx-only-key-0000001"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	t.Setenv("E2E_5XX", k)
	startRelay(t, fake, `
		client app {
			key rk-5xx-client
		}
		upstream only {UPSTREAM} {
			key {env.E2E_5XX}
		}
		retries 1`)
	fake.AddFault(fakeopenai.Fault{Status: http.StatusServiceUnavailable, Count: 2})
	client := sdk("rk-5xx-client")
	_, err := client.Chat.Completions.New(context.Background(), chatParams("x"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %v; want the upstream's 503", err)
	}
	if n := fake.Count(k); n != 2 {
		t.Errorf("upstream saw %d attempts; want 2 (one retry)", n)
	}
	// The faults are used up: the next request succeeds.
	if _, err := client.Chat.Completions.New(context.Background(), chatParams("x")); err != nil {
		t.Fatal(err)
	}
}

func TestE2EStreamIsNotBuffered(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 6, ChunkDelay: 250 * time.Millisecond})
	defer fake.Close()
	k := "sk-e2e-stream-timing-000001"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	t.Setenv("E2E_STREAM", k)
	startRelay(t, fake, `
		client app {
			key rk-stream-client
		}
		upstream only {UPSTREAM} {
			key {env.E2E_STREAM}
		}`)
	client := sdk("rk-stream-client")
	start := time.Now()
	stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("one two three four five six"))
	var first, last time.Duration
	chunks := 0
	for stream.Next() {
		if chunks == 0 {
			first = time.Since(start)
		}
		chunks++
		last = time.Since(start)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d chunks: first after %v, last after %v", chunks, first, last)
	// The upstream spaces its chunks by 250ms: a buffering relay would
	// deliver the first chunk together with the last.
	if last-first < 1000*time.Millisecond {
		t.Errorf("first chunk at %v, last at %v: the stream was buffered", first, last)
	}
}

func TestE2EMidStreamDropIsNotRetried(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 6})
	defer fake.Close()
	k := "sk-e2e-stream-drop-00000001"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	t.Setenv("E2E_DROP", k)
	startRelay(t, fake, `
		client app {
			key rk-drop-client
		}
		upstream only {UPSTREAM} {
			key {env.E2E_DROP}
		}`)
	fake.AddFault(fakeopenai.Fault{DropAfter: 2, Count: 1})
	client := sdk("rk-drop-client")
	stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("one two three four five six"))
	chunks := 0
	for stream.Next() {
		chunks++
	}
	if stream.Err() == nil && chunks > 2 {
		t.Errorf("stream ended cleanly with %d chunks; want a cut stream", chunks)
	}
	if n := fake.Count(k); n != 1 {
		t.Errorf("upstream saw %d calls; a stream that started must not be retried", n)
	}
}

func TestE2EClientDisconnectCancelsUpstream(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 40, ChunkDelay: 100 * time.Millisecond})
	defer fake.Close()
	k := "sk-e2e-disconnect-000000001"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	t.Setenv("E2E_DISCONNECT", k)
	startRelay(t, fake, `
		client app {
			key rk-disconnect-client
		}
		upstream only {UPSTREAM} {
			key {env.E2E_DISCONNECT}
		}`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, relayBase+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"long story"}]}`))
	req.Header.Set("Authorization", "Bearer rk-disconnect-client")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	// The fake records a request when it finishes; a cancelled upstream
	// request finishes long before its 4s of chunks.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if len(fake.Records()) == 1 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("the upstream request was still running 2s after the client left")
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestE2ETLSUpstreamThroughTransportBlock reaches an https upstream (HTTP/2,
// a self-signed certificate) through reverse_proxy's own transport block,
// with an Azure-style api-key header and a model alias.
func TestE2ETLSUpstreamThroughTransportBlock(t *testing.T) {
	fake := fakeopenai.NewHandler(fakeopenai.Options{RequireAPIKeyHeader: true})
	k := "azure-key-0123456789abcdef0123"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	srv := httptest.NewUnstartedServer(fake)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	t.Setenv("E2E_TLS_KEY", k)
	startRelay(t, fakeAt(srv.URL+"/v1"), `
		client app {
			key rk-tls-client
		}
		upstream azure {
			url {UPSTREAM}
			auth api-key
			model_alias my-model gpt-4o-mini
			transport http {
				tls_insecure_skip_verify
				versions 2
			}
			key {env.E2E_TLS_KEY}
		}`)
	client := sdk("rk-tls-client")
	res, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "my-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("over tls")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "gpt-4o-mini" {
		t.Errorf("the upstream saw model %q; want the alias gpt-4o-mini", res.Model)
	}
	recs := fake.Records()
	if len(recs) != 1 || recs[0].Header.Get("Api-Key") != k || recs[0].Header.Get("Authorization") != "" {
		t.Fatalf("records %+v", recs)
	}
}
