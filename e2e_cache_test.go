package openairelay_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// rawPost sends a body as it is and returns the status, headers and body.
func rawPost(t *testing.T, clientKey, path, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, relayBase+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(out)
}

func idOf(t *testing.T, body string) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.ID == "" {
		t.Fatalf("no id in %q", body)
	}
	return v.ID
}

func startCachedRelay(t *testing.T, fake *fakeopenai.Server, name string, extra string) string {
	t.Helper()
	k := "sk-e2e-cache-" + name + "-0000cccc"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	env := "E2E_CACHE_" + strings.ToUpper(name)
	t.Setenv(env, k)
	startRelay(t, fake, `
		client app {
			key rk-cache-app
		}
		client other {
			key rk-cache-other
		}
		upstream cached {UPSTREAM} {
			key {env.`+env+`}
		}
		cache {
`+extra+`
		}`)
	return k
}

func TestE2ECacheIdentity(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := startCachedRelay(t, fake, "identity", "")

	first := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"cache me"}],"temperature":0.5}`
	same := "{ \"temperature\" : 5e-1,\n \"messages\":[{\"content\":\"cache me\",\"role\":\"user\"}], \"model\":\"gpt-4o-mini\", \"user\":\"someone\", \"n\":1 }"
	code, h1, b1 := rawPost(t, "rk-cache-app", "/chat/completions", first)
	if code != 200 || h1.Get("X-Relay-Cache") != "MISS" {
		t.Fatalf("first: %d %s %s", code, h1.Get("X-Relay-Cache"), b1)
	}
	code, h2, b2 := rawPost(t, "rk-cache-app", "/chat/completions", same)
	if code != 200 || h2.Get("X-Relay-Cache") != "HIT" || h2.Get("Age") == "" {
		t.Fatalf("reordered: %d cache %q age %q", code, h2.Get("X-Relay-Cache"), h2.Get("Age"))
	}
	if idOf(t, b1) != idOf(t, b2) {
		t.Error("a hit has another id than the stored answer")
	}
	if n := fake.Count(k); n != 1 {
		t.Errorf("upstream called %d times; want 1", n)
	}

	// A different parameter is a different request.
	code, h3, _ := rawPost(t, "rk-cache-app", "/chat/completions", strings.Replace(first, "0.5", "0.6", 1))
	if code != 200 || h3.Get("X-Relay-Cache") != "MISS" {
		t.Errorf("changed temperature: %s", h3.Get("X-Relay-Cache"))
	}
	// Another client does not see app's entries under the default scope.
	_, h4, _ := rawPost(t, "rk-cache-other", "/chat/completions", first)
	if h4.Get("X-Relay-Cache") != "MISS" {
		t.Errorf("another client: %s; want MISS", h4.Get("X-Relay-Cache"))
	}
	// Cache-Control: no-store bypasses; no-cache skips the lookup and
	// stores; max-age=0 refuses the stored entry.
	_, h5, _ := rawPost(t, "rk-cache-app", "/chat/completions", first, "Cache-Control", "no-store")
	_, h6, _ := rawPost(t, "rk-cache-app", "/chat/completions", first, "Cache-Control", "no-cache")
	time.Sleep(1100 * time.Millisecond)
	_, h7, _ := rawPost(t, "rk-cache-app", "/chat/completions", first, "Cache-Control", "max-age=0")
	_, h8, _ := rawPost(t, "rk-cache-app", "/chat/completions", first)
	if h5.Get("X-Relay-Cache") != "BYPASS" || h6.Get("X-Relay-Cache") != "MISS" || h7.Get("X-Relay-Cache") != "MISS" || h8.Get("X-Relay-Cache") != "HIT" {
		t.Errorf("no-store %s, no-cache %s, max-age=0 %s, then %s", h5.Get("X-Relay-Cache"), h6.Get("X-Relay-Cache"), h7.Get("X-Relay-Cache"), h8.Get("X-Relay-Cache"))
	}
	if n := fake.Count(k); n != 6 {
		t.Errorf("upstream called %d times; want 6", n)
	}
}

func TestE2ECacheStreamsAndConversion(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := startCachedRelay(t, fake, "stream", "")
	client := sdk("rk-cache-app")
	ctx := context.Background()

	// Stored as a stream, then served as a stream and as an answer.
	streamText := func(prompt string) (string, string) {
		s := client.Chat.Completions.NewStreaming(ctx, chatParams(prompt))
		var acc openai.ChatCompletionAccumulator
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return acc.ID, acc.Choices[0].Message.Content
	}
	id1, text1 := streamText("stream then replay")
	id2, text2 := streamText("stream then replay")
	if id1 != id2 || text1 != text2 || text1 == "" {
		t.Errorf("stream replay: %s %q vs %s %q", id1, text1, id2, text2)
	}
	var resp *http.Response
	res, err := client.Chat.Completions.New(ctx, chatParams("stream then replay"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-Relay-Cache") != "HIT" || res.ID != id1 || res.Choices[0].Message.Content != text1 {
		t.Errorf("answer from a stored stream: %s %s %q", resp.Header.Get("X-Relay-Cache"), res.ID, res.Choices[0].Message.Content)
	}

	// Stored as an answer, then served as a stream.
	res, err = client.Chat.Completions.New(ctx, chatParams("answer then stream"))
	if err != nil {
		t.Fatal(err)
	}
	id3, text3 := streamText("answer then stream")
	if id3 != res.ID || text3 != res.Choices[0].Message.Content {
		t.Errorf("stream from a stored answer: %s %q vs %s %q", id3, text3, res.ID, res.Choices[0].Message.Content)
	}
	if n := fake.Count(k); n != 2 {
		t.Errorf("upstream called %d times; want 2", n)
	}
}

func TestE2ECacheCoalescesConcurrentRequests(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 8, ChunkDelay: 150 * time.Millisecond})
	defer fake.Close()
	k := startCachedRelay(t, fake, "coalesce", "")
	const n = 50

	// The upstream takes over a second to answer, so that all 50 requests
	// arrive while the first is in flight even on a loaded machine.
	run := func(stream bool) {
		fake.ResetRecords()
		body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"everyone asks this"}],"stream":` + map[bool]string{true: "true", false: "false"}[stream] + `}`
		if !stream {
			fake.AddFault(fakeopenai.Fault{Latency: 1500 * time.Millisecond, Count: 1})
		}
		var wg sync.WaitGroup
		results := make([]string, n)
		caches := make([]string, n)
		for i := range n {
			wg.Go(func() {
				code, h, b := rawPost(t, "rk-cache-app", "/chat/completions", body, "Cache-Control", "no-cache")
				if code != 200 {
					t.Errorf("request %d: %d %s", i, code, b)
				}
				results[i], caches[i] = b, h.Get("X-Relay-Cache")
			})
		}
		wg.Wait()
		if c := fake.Count(k); c != 1 {
			t.Errorf("stream=%v: upstream called %d times for %d identical requests; want 1", stream, c, n)
		}
		coalesced := 0
		for i := range n {
			if results[i] != results[0] {
				t.Errorf("stream=%v: request %d got another answer", stream, i)
				break
			}
			if caches[i] == "COALESCED" {
				coalesced++
			}
		}
		if coalesced != n-1 {
			t.Errorf("stream=%v: %d COALESCED; want %d", stream, coalesced, n-1)
		}
		if stream && !strings.HasSuffix(results[0], "data: [DONE]\n\n") {
			t.Errorf("coalesced stream incomplete: %q", results[0])
		}
	}
	run(false)
	run(true)
}

func TestE2ECacheAdmin(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	startCachedRelay(t, fake, "admin", "\t\t\tscope global")
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"admin cache"}]}`
	rawPost(t, "rk-cache-app", "/chat/completions", body)
	_, h, _ := rawPost(t, "rk-cache-other", "/chat/completions", body)
	if h.Get("X-Relay-Cache") != "HIT" {
		t.Errorf("scope global: another client got %s", h.Get("X-Relay-Cache"))
	}
	var st struct {
		Entries  int64   `json:"entries"`
		Bytes    int64   `json:"bytes"`
		HitRatio float64 `json:"hit_ratio"`
	}
	adminGet(t, "/openai_relay/cache", &st)
	if st.Entries < 1 || st.Bytes <= 0 || st.HitRatio <= 0 {
		t.Errorf("cache stats %+v", st)
	}
	req, _ := http.NewRequest(http.MethodDelete, adminBase+"/openai_relay/cache", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("purge: %v %v", err, resp)
	}
	resp.Body.Close()
	_, h, _ = rawPost(t, "rk-cache-app", "/chat/completions", body)
	if h.Get("X-Relay-Cache") != "MISS" {
		t.Errorf("after purge: %s", h.Get("X-Relay-Cache"))
	}
}

func TestE2ESemanticCache(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := startCachedRelay(t, fake, "semantic", `			semantic {
				model text-embedding-3-small
				threshold 0.9
			}`)
	ask := func(system, question string) (string, string) {
		body := `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"` + system + `"},{"role":"user","content":"` + question + `"}]}`
		code, h, b := rawPost(t, "rk-cache-app", "/chat/completions", body)
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		return h.Get("X-Relay-Cache"), idOf(t, b)
	}
	r1, id1 := ask("be brief", "what is the capital of france")
	r2, id2 := ask("be brief", "what is the capital of france please")
	r3, _ := ask("be brief", "tell me a joke about cats")
	r4, _ := ask("be verbose", "what is the capital of france")
	if r1 != "MISS" || r2 != "HIT" || id2 != id1 {
		t.Errorf("similar question: %s %s (ids %s %s); want MISS then HIT with the same id", r1, r2, id1, id2)
	}
	if r3 != "MISS" {
		t.Errorf("unrelated question: %s; want MISS", r3)
	}
	if r4 != "MISS" {
		t.Errorf("same question after another system message: %s; want MISS", r4)
	}
	chats := 0
	for _, rec := range fake.Records() {
		if rec.Key == k && strings.HasSuffix(rec.Path, "/chat/completions") {
			chats++
		}
	}
	if chats != 3 {
		t.Errorf("upstream answered %d chat requests; want 3", chats)
	}
}
