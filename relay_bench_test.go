package openairelay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	openairelay "github.com/caddyrelay/openairelay"
	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The benchmarks below measure the relay's own work for one small non-stream
// chat completion: authentication, body read and parse, route and key choice,
// header rewrite, the round trip through Caddy's HTTP transport and the copy
// of the answer. Each runs against two upstreams:
//
//   - static: a handler that answers every request with one fixed chat
//     completion, so that the figures are the relay's and the loopback's
//     cost, not the upstream's;
//   - fake: internal/fakeopenai (any key accepted), the upstream of the tests
//     and of `make bench`.
//
// BenchmarkDirectChat sends the same request to the same upstream with
// net/http alone: the difference is what the relay adds. A request is
// prepared with caddyhttp.PrepareRequest on every iteration, as Caddy's
// server does, so that cost (a few allocations) is part of the relay's
// figures. `make bench` measures the same thing end to end, with real
// processes, against plain reverse_proxy.
//
//	go test -run '^$' -bench 'RelayChat|DirectChat' -benchmem .

const (
	benchClientKey = "rk-bench-client"
	benchChatBody  = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello, how are you today?"}],"max_tokens":64}`
)

// staticChatCompletion is what the static upstream answers: the shape and
// size of a real small completion.
const staticChatCompletion = `{"id":"chatcmpl-BENCH00000000000000000000000000","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"echo: Hello, how are you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":6,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench000"}`

func staticUpstream() http.Handler {
	body := []byte(staticChatCompletion)
	length := fmt.Sprint(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		h["X-Request-Id"] = []string{"req_bench"}
		_, _ = w.Write(body)
	})
}

type benchUpstream struct {
	name string
	new  func() http.Handler
}

var benchUpstreams = []benchUpstream{
	{"static", staticUpstream},
	{"fake", func() http.Handler { return fakeopenai.NewHandler(fakeopenai.Options{AllowAnyKey: true}) }},
}

// newBenchRelay provisions a relay with one client and nKeys keys on one
// upstream at baseURL (ending in /v1), through the exported API only.
func newBenchRelay(b testing.TB, baseURL string, nKeys int) *openairelay.Relay {
	b.Helper()
	return newBenchRelayWith(b, baseURL, nKeys, nil)
}

// newBenchRelayWith is newBenchRelay with more top-level config fields.
func newBenchRelayWith(b testing.TB, baseURL string, nKeys int, extra map[string]any) *openairelay.Relay {
	b.Helper()
	keys := make([]map[string]any, nKeys)
	for i := range keys {
		// Keys unique to this benchmark: key state is shared process-wide
		// by upstream URL and key, and the URL is a fresh port anyway.
		keys[i] = map[string]any{"key": fmt.Sprintf("sk-bench-%s-%05d", b.Name(), i)}
	}
	config := map[string]any{
		"clients":   []map[string]any{{"name": "bench", "keys": []string{benchClientKey}}},
		"upstreams": []map[string]any{{"name": "up", "url": baseURL, "keys": keys}},
	}
	for k, v := range extra {
		config[k] = v
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		b.Fatal(err)
	}
	var rl openairelay.Relay
	if err := json.Unmarshal(cfg, &rl); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := rl.Provision(ctx); err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = rl.Cleanup()
		cancel()
	})
	if err := rl.Validate(); err != nil {
		b.Fatal(err)
	}
	return &rl
}

// discardWriter is a ResponseWriter that keeps only the status and the
// number of body bytes, so the benchmark measures the relay, not a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) Flush() {}

// relayOnce serves one chat completion through rl into w.
func relayOnce(rl *openairelay.Relay, w *discardWriter, body []byte) error {
	clear(w.h)
	w.status, w.n = 0, 0
	req := httptest.NewRequest(http.MethodPost, "http://relay.test/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+benchClientKey)
	req.Header.Set("Content-Type", "application/json")
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
	if err := rl.ServeHTTP(w, req, nil); err != nil {
		return err
	}
	if w.status != http.StatusOK || w.n == 0 {
		return fmt.Errorf("relay answered %d with %d bytes", w.status, w.n)
	}
	return nil
}

func BenchmarkRelayChat(b *testing.B) {
	body := []byte(benchChatBody)
	for _, up := range benchUpstreams {
		b.Run("upstream="+up.name, func(b *testing.B) {
			srv := httptest.NewServer(up.new())
			b.Cleanup(srv.Close)
			for _, nKeys := range []int{1, 100, 1000} {
				b.Run(fmt.Sprintf("keys=%d", nKeys), func(b *testing.B) {
					rl := newBenchRelay(b, srv.URL+"/v1", nKeys)
					b.Run("serial", func(b *testing.B) {
						w := &discardWriter{h: make(http.Header)}
						b.ReportAllocs()
						for b.Loop() {
							if err := relayOnce(rl, w, body); err != nil {
								b.Fatal(err)
							}
						}
					})
					b.Run("parallel", func(b *testing.B) {
						b.ReportAllocs()
						b.RunParallel(func(pb *testing.PB) {
							w := &discardWriter{h: make(http.Header)}
							for pb.Next() {
								if err := relayOnce(rl, w, body); err != nil {
									b.Error(err)
									return
								}
							}
						})
					})
				})
			}
		})
	}
}

// BenchmarkDirectChat is the baseline: the same request to the same upstream
// with net/http alone, the client key standing in for an upstream key.
func BenchmarkDirectChat(b *testing.B) {
	body := []byte(benchChatBody)
	for _, up := range benchUpstreams {
		b.Run("upstream="+up.name, func(b *testing.B) {
			srv := httptest.NewServer(up.new())
			b.Cleanup(srv.Close)
			client := newDirectClient(b)
			url := srv.URL + "/v1/chat/completions"
			once := func() error { return directOnce(client, url, body) }
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := once(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := once(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

func newDirectClient(b testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// directOnce posts body to url with net/http alone and reads the answer.
func directOnce(client *http.Client, url string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer sk-bench-direct")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n == 0 {
		return fmt.Errorf("upstream answered %d with %d bytes", resp.StatusCode, n)
	}
	return nil
}

// benchStreamBody asks for a stream; the fake upstream answers it in
// benchStreamChunks content chunks, as `make bench` case c does.
const (
	benchStreamBody   = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me, in a few plain sentences, how a relay in front of an API spreads requests over a pool of keys and what it does when one of them is rate limited."}]}`
	benchStreamChunks = 50
)

// BenchmarkRelayStream relays a chat completion stream of 50 chunks from the
// fake upstream (each event flushed on its own), one key; BenchmarkDirectStream
// reads the same stream straight.
func BenchmarkRelayStream(b *testing.B) {
	body := []byte(benchStreamBody)
	srv := httptest.NewServer(fakeopenai.NewHandler(fakeopenai.Options{AllowAnyKey: true, StreamChunks: benchStreamChunks}))
	b.Cleanup(srv.Close)
	rl := newBenchRelay(b, srv.URL+"/v1", 1)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		if err := relayOnce(rl, w, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDirectStream(b *testing.B) {
	body := []byte(benchStreamBody)
	srv := httptest.NewServer(fakeopenai.NewHandler(fakeopenai.Options{AllowAnyKey: true, StreamChunks: benchStreamChunks}))
	b.Cleanup(srv.Close)
	client := newDirectClient(b)
	url := srv.URL + "/v1/chat/completions"
	b.ReportAllocs()
	for b.Loop() {
		if err := directOnce(client, url, body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBenchRelaySetup runs each benchmark configuration once, so that a
// broken benchmark shows up in the ordinary test run (benchmarks themselves
// do not run under `go test`).
func TestBenchRelaySetup(t *testing.T) {
	body := []byte(benchChatBody)
	for _, up := range benchUpstreams {
		srv := httptest.NewServer(up.new())
		defer srv.Close()
		rl := newBenchRelay(t, srv.URL+"/v1", 3)
		w := &discardWriter{h: make(http.Header)}
		for range 3 {
			if err := relayOnce(rl, w, body); err != nil {
				t.Fatalf("%s: %v", up.name, err)
			}
		}
		if !strings.HasPrefix(w.h.Get("Content-Type"), "application/json") {
			t.Errorf("%s: content type %q", up.name, w.h.Get("Content-Type"))
		}
	}
	srv := httptest.NewServer(fakeopenai.NewHandler(fakeopenai.Options{AllowAnyKey: true, StreamChunks: benchStreamChunks}))
	defer srv.Close()
	rl := newBenchRelay(t, srv.URL+"/v1", 1)
	w := &discardWriter{h: make(http.Header)}
	if err := relayOnce(rl, w, []byte(benchStreamBody)); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if !strings.HasPrefix(w.h.Get("Content-Type"), "text/event-stream") {
		t.Errorf("stream: content type %q", w.h.Get("Content-Type"))
	}
}

// BenchmarkCache compares a cache hit with Caddy's own static `respond`
// handler answering the same bytes (the floor for any handler) and with a
// miss (Cache-Control: no-cache: the lookup is skipped, the answer fetched
// from the static upstream and stored).
//
//	go test -run '^$' -bench Cache -benchmem .
func BenchmarkCache(b *testing.B) {
	body := []byte(benchChatBody)
	srv := httptest.NewServer(staticUpstream())
	b.Cleanup(srv.Close)
	rl := newBenchRelayWith(b, srv.URL+"/v1", 1, map[string]any{"cache": map[string]any{}})
	w := &discardWriter{h: make(http.Header)}
	if err := relayOnce(rl, w, body); err != nil { // stores the answer
		b.Fatal(err)
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := relayOnce(rl, w, body); err != nil {
				b.Fatal(err)
			}
			if w.h.Get("X-Relay-Cache") != "HIT" {
				b.Fatalf("X-Relay-Cache %q", w.h.Get("X-Relay-Cache"))
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			w.status, w.n = 0, 0
			req := httptest.NewRequest(http.MethodPost, "http://relay.test/v1/chat/completions", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+benchClientKey)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Cache-Control", "no-cache")
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
			if err := rl.ServeHTTP(w, req, nil); err != nil || w.status != http.StatusOK {
				b.Fatalf("%v %d", err, w.status)
			}
		}
	})
	b.Run("respond", func(b *testing.B) {
		respond := caddyhttp.StaticResponse{
			StatusCode: caddyhttp.WeakString("200"),
			Body:       staticChatCompletion,
			Headers:    http.Header{"Content-Type": {"application/json"}},
		}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			w.status, w.n = 0, 0
			req := httptest.NewRequest(http.MethodPost, "http://relay.test/v1/chat/completions", bytes.NewReader(body))
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
			if err := respond.ServeHTTP(w, req, nil); err != nil || w.n == 0 {
				b.Fatalf("%v %d", err, w.n)
			}
		}
	})
}
