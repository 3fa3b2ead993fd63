package openairelay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// TestSoak is the load and fault suite: concurrent clients (non-stream chat,
// chat streams, responses streams, embeddings) run through the relay while
// the fake upstream injects, in turns, 5xx answers, connection resets, slow
// headers, mid-stream drops, 429s, a key going dead and coming back, and an
// outage of every upstream, and while Caddy is reloaded with a changed
// config. Every request must end in a success or a clear error (an
// OpenAI-shaped error body, or for a stream cut mid-way a truncated stream):
// none hangs, none is lost, none is answered twice or with another
// request's answer. After the load no request may be in flight on any key,
// the queue must be empty, and no goroutine may be left.
//
// It runs for 5s by default, so that every `go test` runs it in short form.
// The long form:
//
//	SOAK_DURATION=2m E2E_HTTP_PORT=9180 E2E_ADMIN_PORT=3099 go test -race -count=1 -run TestSoak -timeout 10m -v .
//
// SOAK_CLIENTS sets the number of concurrent clients (default 32).
func TestSoak(t *testing.T) {
	skipLong(t)
	duration := 5 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION=%q: want a duration such as 2m", v)
		}
		duration = d
	}
	workers := 32
	if v := os.Getenv("SOAK_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("SOAK_CLIENTS=%q: want a positive integer", v)
		}
		workers = n
	}

	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 6, ChunkDelay: 2 * time.Millisecond})
	defer fake.Close()
	// Two upstreams (on the same fake) with keys of their own; a fifth key
	// of the first upstream is added by a reload half-way.
	keys := map[string]string{}
	for _, name := range []string{"a0", "a1", "a2", "a3", "a4", "b0", "b1"} {
		k := "sk-soak-" + name + "-0123456789abcdefghij" + name
		keys[name] = k
		fake.AddKey(k, fakeopenai.KeyLimits{})
		t.Setenv("E2E_SOAK_"+strings.ToUpper(name), k)
	}

	// keepalive 3s: a config's transport is closed when the config is
	// replaced, but a request of the old config still running (a retry)
	// may open a connection on it after that, which then idles for the
	// transport's IdleConnTimeout (2m by default) before it closes. Kept
	// short here, so that what is left after the settle time is a leak.
	e := startRelay(t, fake, soakConfig(0))
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 2 * workers, MaxIdleConnsPerHost: 2 * workers, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()

	// A request answered twice on one connection shows up as an unsolicited
	// response, which net/http reports through the standard logger.
	unsolicited := &logWatch{needle: "Unsolicited response"}
	logOut := log.Writer()
	log.SetOutput(io.MultiWriter(logOut, unsolicited))
	defer log.SetOutput(logOut)

	// Warm up (one request of each kind), then take the baselines.
	st := &soakStats{classes: map[string]int{}}
	for kind := range soakKinds {
		res := soakRequest(client, kind, fmt.Sprintf("warm-up %d", kind), nil)
		if res.class != "ok" {
			t.Fatalf("warm-up %s: %s %s", soakKinds[kind], res.class, res.detail)
		}
	}
	retriesBefore := metricSum(t, "caddy_openai_relay_retries_total")
	client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(300 * time.Millisecond)
	goroutinesBefore, relayBefore := runtime.NumGoroutine(), relayGoroutines()
	// The fake keeps its records only around reloads, where they are
	// needed (see keepAliveRace): a long soak would hold every request.
	fake.SetRecording(false)
	fake.ResetRecords()
	a0Before := findKey(t, "a", "a0")

	// The reload windows, for telling a keep-alive race (a request sent on a
	// connection the old server was closing) from a lost request.
	var reloads reloadLog
	var phase atomic.Value
	phase.Store("warm-up")

	// The clients.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				kind := (w + i) % len(soakKinds)
				prompt := fmt.Sprintf("soak w%02d r%05d n%d", w, i, seq.Add(1))
				during := phase.Load().(string)
				res := soakRequest(client, kind, prompt, &reloads)
				if res.failure {
					res.detail += " (phase " + during + " → " + phase.Load().(string) + ")"
				}
				st.add(kind, prompt, res)
			}
		})
	}

	// The faults, in turns, and the reloads.
	phaseLen := min(duration/time.Duration(len(soakPhases)), 2*time.Second)
	phaseLen = max(phaseLen, 400*time.Millisecond)
	deadline := time.Now().Add(duration)
	run := &soakRun{t: t, fake: fake, keys: keys, e: e, reloadLog: &reloads}
	var phasesRun []string
	for i := 0; time.Now().Before(deadline); i++ {
		name := soakPhases[i%len(soakPhases)]
		phasesRun = append(phasesRun, name)
		phase.Store(name)
		run.start(name)
		time.Sleep(min(phaseLen, time.Until(deadline)))
		phase.Store(name + " (ending)")
		run.end(name)
	}
	close(stop)
	waitStart := time.Now()
	wg.Wait()
	loadEnd := time.Now()
	t.Logf("phases run: %s", strings.Join(phasesRun, ", "))
	t.Logf("clients finished %v after the end of the load", loadEnd.Sub(waitStart).Round(time.Millisecond))

	// Key state survived the reloads: the counters only grew.
	if after := findKey(t, "a", "a0"); run.reloads > 0 && after.PromptTokens < a0Before.PromptTokens {
		t.Errorf("key a0's prompt tokens went from %d to %d across reloads: its state was reset",
			a0Before.PromptTokens, after.PromptTokens)
	}

	// The figures.
	retries := metricSum(t, "caddy_openai_relay_retries_total") - retriesBefore
	st.report(t, retries)

	st.check(t, fake.Records(), unsolicited.count.Load())

	checkDrained(t)

	checkNoGoroutinesLeft(t, fake, client, goroutinesBefore, relayBefore)
	run.e.assertNoSecrets(mapValues(keys), []string{"rk-soak-client"})
}

// soakPhases are the turns of the fault injection.
var soakPhases = []string{"clean", "5xx", "resets", "slow headers", "mid-stream drops", "429s", "dead key", "outage", "reload", "clean"}

var soakKinds = []string{"chat", "chat stream", "embeddings", "responses stream"}

const keepAliveRace = "connection closed by a reload before the request was read"

// isDialError reports whether err happened while connecting, before any
// byte of the request was sent.
// soakConfig is the soak's relay: two upstreams on the same fake with keys
// of their own; an odd variant (every other reload) adds a fifth key to the
// first and a retry more.
func soakConfig(variant int) string {
	keyLine := func(name string) string {
		return fmt.Sprintf("\t\t\tkey {env.E2E_SOAK_%s} {\n\t\t\t\tname %s\n\t\t\t}\n", strings.ToUpper(name), name)
	}
	a := keyLine("a0") + keyLine("a1") + keyLine("a2") + keyLine("a3")
	retries := 3
	if variant%2 == 1 {
		a += keyLine("a4")
		retries = 4
	}
	return `
	client soak {
		key rk-soak-client
	}
	upstream a {UPSTREAM} {
		transport http {
			response_header_timeout 2s
			keepalive 3s
		}
` + a + `		}
	upstream b {UPSTREAM} {
		transport http {
			response_header_timeout 2s
			keepalive 3s
		}
` + keyLine("b0") + keyLine("b1") + `		}
	retries ` + strconv.Itoa(retries) + `
	max_wait 5s
	cooldown 1s
	probe_backoff 300ms`
}

// soakRun is the state of the soak's fault phases.
type soakRun struct {
	t         *testing.T
	fake      *fakeopenai.Server
	keys      map[string]string // by key name: a0..a4, b0, b1
	e         *e2e              // the relay as the latest reload left it
	reloadLog *reloadLog
	reloads   int
	// recordUntil is when the fake may stop recording again after a reload.
	recordUntil time.Time
}

// start begins the fault phase called name (one of soakPhases). The dead
// key is a1.
func (r *soakRun) start(name string) {
	if time.Now().After(r.recordUntil) {
		r.fake.SetRecording(false)
	}
	switch name {
	case "5xx":
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusInternalServerError, Count: 30})
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusBadGateway, Count: 30, Key: r.keys["b0"]})
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusServiceUnavailable, Count: 30, Key: r.keys["a2"]})
	case "resets":
		r.fake.AddFault(fakeopenai.Fault{Reset: true, Count: 40})
	case "slow headers":
		r.fake.AddFault(fakeopenai.Fault{Latency: 3 * time.Second, Count: 4})         // past response_header_timeout
		r.fake.AddFault(fakeopenai.Fault{Latency: 700 * time.Millisecond, Count: 60}) // slow, within it
	case "mid-stream drops":
		r.fake.AddFault(fakeopenai.Fault{DropAfter: 2, Count: 60})
	case "429s":
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusTooManyRequests, Key: r.keys["a0"], Count: 20})
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusTooManyRequests, Key: r.keys["b1"], Count: 20,
			Header: http.Header{"Retry-After": {"1"}, "Retry-After-Ms": {"800"}}})
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusTooManyRequests, Key: r.keys["a3"], Count: 20,
			Body: `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`})
	case "dead key":
		r.fake.SetKeyState(r.keys["a1"], fakeopenai.KeyInvalid)
	case "outage":
		// Every upstream fails for a while: clients get the last 5xx
		// once the retries are spent.
		r.fake.AddFault(fakeopenai.Fault{Status: http.StatusServiceUnavailable})
	case "reload":
		r.reloads++
		r.fake.SetRecording(true)
		end := r.reloadLog.begin()
		r.e = startRelay(r.t, r.fake, soakConfig(r.reloads))
		end()
		// A request cut at the reload that had in fact been relayed
		// would reach the upstream within its few seconds of retries.
		r.recordUntil = time.Now().Add(5 * time.Second)
	}
}

// end clears the phase's faults.
func (r *soakRun) end(name string) {
	r.fake.ClearFaults()
	if name == "dead key" {
		r.fake.SetKeyState(r.keys["a1"], fakeopenai.KeyOK)
	}
}

// check fails the test for every request that did not end well or with a
// clear error, for a request cut by a reload that had in fact reached the
// upstream (recs: what it recorded), and for answers net/http saw twice.
func (s *soakStats) check(t *testing.T, recs []fakeopenai.Record, unsolicited int64) {
	t.Helper()
	// Every request ended well or with a clear error.
	s.mu.Lock()
	if s.requests == 0 || s.successes == 0 {
		t.Errorf("%d requests, %d successes: the load did not run", s.requests, s.successes)
	}
	for _, f := range s.failures {
		t.Errorf("request failed: %s", f)
	}
	if s.failed > len(s.failures) {
		t.Errorf("… and %d more failures", s.failed-len(s.failures))
	}
	s.mu.Unlock()
	// A request cut by a reload's keep-alive race was never read: had it
	// reached the upstream, its answer would have been lost.
	s.mu.Lock()
	for _, p := range s.raced {
		for _, rec := range recs {
			if bytes.Contains(rec.Body, []byte(`"`+p+`"`)) {
				t.Errorf("request %q reached the upstream, but its client got no answer (lost)", p)
				break
			}
		}
	}
	s.mu.Unlock()
	if n := unsolicited; n > 0 {
		t.Errorf("net/http saw %d unsolicited responses: a request was answered twice", n)
	}
}

// checkDrained fails the test unless, after the load, no request is in
// flight on any key and the queue is empty.
func checkDrained(t *testing.T) {
	t.Helper()
	// Nothing left behind: no request in flight on any key, an empty queue.
	if n := settleInFlight(t, 5*time.Second); n != 0 {
		var keysNow json.RawMessage
		adminGet(t, "/openai_relay/keys", &keysNow)
		t.Errorf("%d requests still in flight on the keys 5s after the load:\n%s", n, keysNow)
	}
	queueDeadline := time.Now().Add(5 * time.Second)
	for {
		q := metricSum(t, "caddy_openai_relay_queue_length")
		if q == 0 {
			break
		}
		if time.Now().After(queueDeadline) {
			t.Errorf("queue length %v 5s after the load; want 0", q)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNoGoroutinesLeft reloads to a trivial config and fails the test if
// goroutines of the relay outlive it (before and relayBefore: the counts
// taken before the load).
func checkNoGoroutinesLeft(t *testing.T, fake *fakeopenai.Server, client *http.Client, goroutinesBefore int, relayBefore map[string][]string) {
	t.Helper()
	// Reload to something trivial and look for goroutines left behind.
	trivialKey := "sk-soak-trivial-000000000000ttt"
	fake.AddKey(trivialKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_SOAK_TRIVIAL", trivialKey)
	startRelay(t, fake, `
		client trivial {
			key rk-soak-trivial
		}
		upstream only {UPSTREAM} {
			key {env.E2E_SOAK_TRIVIAL}
		}`)
	client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	const tolerance = 10
	n, left := settleGoroutines(goroutinesBefore+tolerance, relayBefore, 10*time.Second)
	t.Logf("goroutines: %d before the load, %d after it and a reload to a trivial config", goroutinesBefore, n)
	if n > goroutinesBefore+tolerance || len(left) > 0 {
		t.Errorf("%d goroutines after the load (%d before, tolerance %d); relay goroutines left:\n%s",
			n, goroutinesBefore, tolerance, strings.Join(left[:min(5, len(left))], "\n\n"))
		if n > goroutinesBefore+tolerance {
			t.Logf("goroutines by function:\n%s", goroutineSummary())
		}
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// soakResult is how one request ended. class is "ok", "truncated stream",
// "status <code>" (a clear error), "keep-alive race" or a failure class.
type soakResult struct {
	class   string
	failure bool
	detail  string
	latency time.Duration
}

type soakStats struct {
	mu         sync.Mutex
	requests   int
	successes  int
	failed     int
	classes    map[string]int
	byKind     [4]int
	failures   []string
	maxLatency time.Duration
	raced      []string // prompts of requests cut by a reload's keep-alive race
}

func (s *soakStats) add(kind int, prompt string, r soakResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.class == keepAliveRace {
		s.raced = append(s.raced, prompt)
	}
	s.requests++
	s.byKind[kind]++
	s.classes[r.class]++
	if r.class == "ok" {
		s.successes++
	}
	if r.failure {
		s.failed++
		if len(s.failures) < 20 {
			s.failures = append(s.failures, fmt.Sprintf("%s: %s: %s", soakKinds[kind], r.class, r.detail))
		}
	}
	s.maxLatency = max(s.maxLatency, r.latency)
}

func (s *soakStats) report(t *testing.T, retries float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var classes []string
	for c, n := range s.classes {
		classes = append(classes, fmt.Sprintf("%s: %d", c, n))
	}
	sort.Strings(classes)
	t.Logf("requests: %d (chat %d, chat stream %d, embeddings %d, responses stream %d)",
		s.requests, s.byKind[0], s.byKind[1], s.byKind[2], s.byKind[3])
	t.Logf("successes: %d (%.1f%%)", s.successes, 100*float64(s.successes)/math.Max(1, float64(s.requests)))
	t.Logf("outcomes: %s", strings.Join(classes, ", "))
	t.Logf("failures (hung, lost, garbled, answered twice): %d", s.failed)
	t.Logf("relay retries: %.0f", retries)
	t.Logf("max latency: %v", s.maxLatency.Round(time.Millisecond))
}

// reloadLog is the time windows of config reloads.
type reloadLog struct {
	mu      sync.Mutex
	windows [][2]time.Time
}

// begin records that a reload starts now, and returns the function that
// records its end.
func (l *reloadLog) begin() (end func()) {
	l.mu.Lock()
	i := len(l.windows)
	l.windows = append(l.windows, [2]time.Time{time.Now()})
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		l.windows[i][1] = time.Now()
		l.mu.Unlock()
	}
}

// near reports whether the span from..to overlaps a reload (one in
// progress, or one that ended less than a second before).
func (l *reloadLog) near(from, to time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.windows {
		if !to.Before(w[0]) && (w[1].IsZero() || !from.After(w[1].Add(time.Second))) {
			return true
		}
	}
	return false
}

type logWatch struct {
	needle string
	count  atomic.Int64
}

func (w *logWatch) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.needle)) {
		w.count.Add(1)
	}
	return len(p), nil
}

// soakRequest sends one request of a kind and judges its answer.
func soakRequest(client *http.Client, kind int, prompt string, reloads *reloadLog) soakResult {
	var path string
	var body []byte
	switch soakKinds[kind] {
	case "chat":
		path, body = "/chat/completions", validBody(prompt)
	case "chat stream":
		path = "/chat/completions"
		body, _ = json.Marshal(map[string]any{"model": "gpt-4o-mini", "stream": true,
			"messages": []map[string]string{{"role": "user", "content": prompt}}})
	case "embeddings":
		path = "/embeddings"
		body, _ = json.Marshal(map[string]any{"model": "text-embedding-3-small", "input": prompt})
	case "responses stream":
		path = "/responses"
		body, _ = json.Marshal(map[string]any{"model": "gpt-4o-mini", "stream": true, "input": prompt})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reused, gotByte atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
		GotFirstResponseByte: func() { gotByte.Store(true) },
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, relayBase+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer rk-soak-client")
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		res := soakResult{latency: time.Since(start)}
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			res.class, res.failure, res.detail = "hung", true, "no answer in 30s"
		case reused.Load() && !gotByte.Load() && reloads.near(start, time.Now()):
			// The old server closed a keep-alive connection it held as idle
			// while the client was sending on it: HTTP/1.1's known race at a
			// graceful shutdown (clients retry it). Such a request must not
			// have been read: TestSoak checks that it never reached the
			// upstream.
			res.class, res.detail = keepAliveRace, err.Error()
		case isDialError(err) && reloads.near(start, time.Now()):
			// A new connection refused or reset as the old server's
			// listener closed: nothing was sent, and clients retry it.
			res.class, res.detail = keepAliveRace, err.Error()
		default:
			res.class, res.failure, res.detail = "no answer", true, err.Error()
		}
		return res
	}
	defer resp.Body.Close()
	res := judge(kind, prompt, resp)
	res.latency = time.Since(start)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.class, res.failure, res.detail = "hung", true, "the answer did not end in 30s"
	}
	return res
}

// judge reads an answer and classifies it.
func judge(kind int, prompt string, resp *http.Response) soakResult {
	if resp.StatusCode != http.StatusOK {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return soakResult{class: "broken error body", failure: true, detail: err.Error()}
		}
		if !isOpenAIError(b) {
			return soakResult{class: "unclear error", failure: true, detail: fmt.Sprintf("%d %.200s", resp.StatusCode, b)}
		}
		return soakResult{class: "status " + strconv.Itoa(resp.StatusCode)}
	}
	want := "echo: " + prompt
	switch soakKinds[kind] {
	case "chat":
		dec := json.NewDecoder(resp.Body)
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := dec.Decode(&c); err != nil {
			return soakResult{class: "garbled", failure: true, detail: err.Error()}
		}
		if _, err := dec.Token(); err != io.EOF {
			return soakResult{class: "answered twice", failure: true, detail: "more after the JSON answer"}
		}
		if c.Object != "chat.completion" || len(c.Choices) != 1 || c.Choices[0].Message.Content != want {
			return soakResult{class: "wrong answer", failure: true, detail: fmt.Sprintf("%+v; want %q", c, want)}
		}
		return soakResult{class: "ok"}
	case "embeddings":
		dec := json.NewDecoder(resp.Body)
		var em struct {
			Data []struct {
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
		}
		if err := dec.Decode(&em); err != nil {
			return soakResult{class: "garbled", failure: true, detail: err.Error()}
		}
		if _, err := dec.Token(); err != io.EOF {
			return soakResult{class: "answered twice", failure: true, detail: "more after the JSON answer"}
		}
		ref := fakeopenai.Embed(prompt, 64)
		if len(em.Data) != 1 || len(em.Data[0].Embedding) != len(ref) {
			return soakResult{class: "wrong answer", failure: true, detail: fmt.Sprintf("%d embeddings", len(em.Data))}
		}
		for i, x := range em.Data[0].Embedding {
			if math.Abs(x-float64(ref[i])) > 1e-6 {
				return soakResult{class: "wrong answer", failure: true, detail: "another input's embedding"}
			}
		}
		return soakResult{class: "ok"}
	default:
		return judgeStream(kind, want, resp)
	}
}

// judgeStream reads a server-sent event stream: it must come from one
// upstream answer (one id), carry the answer to this request, and end
// properly — or be cut (a truncated stream), which is a clear outcome too.
func judgeStream(kind int, want string, resp *http.Response) soakResult {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return soakResult{class: "not a stream", failure: true, detail: ct}
	}
	responses := soakKinds[kind] == "responses stream"
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var text strings.Builder
	id, done, events := "", false, 0
	bad := func(class, detail string) soakResult {
		return soakResult{class: class, failure: true, detail: detail}
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "event: ") || strings.HasPrefix(line, ":"):
			continue
		case !strings.HasPrefix(line, "data: "):
			return bad("garbled stream", fmt.Sprintf("line %.120q", line))
		}
		if done {
			return bad("answered twice", fmt.Sprintf("data after the end of the stream: %.120q", line))
		}
		data := strings.TrimPrefix(line, "data: ")
		if !responses && data == "[DONE]" {
			done = true
			continue
		}
		events++
		var ev struct {
			ID       string `json:"id"`
			Type     string `json:"type"`
			Delta    string `json:"delta"`
			Response struct {
				ID string `json:"id"`
			} `json:"response"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return bad("garbled stream", fmt.Sprintf("%v in %.120q", err, data))
		}
		evID := ev.ID
		if responses {
			evID = ev.Response.ID
		}
		if evID != "" {
			if id != "" && evID != id {
				return bad("answered twice", fmt.Sprintf("events of two upstream answers (%s and %s)", id, evID))
			}
			id = evID
		}
		if responses {
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed":
				done = true
			}
		} else if len(ev.Choices) > 0 {
			text.WriteString(ev.Choices[0].Delta.Content)
		}
	}
	if !strings.HasPrefix(want, text.String()) {
		return bad("wrong answer", fmt.Sprintf("%q is not the start of %q", text.String(), want))
	}
	if !done {
		// Cut mid-way (an upstream drop): a clear outcome for a stream,
		// provided it started.
		if events == 0 {
			return bad("empty stream", fmt.Sprintf("a 200 stream with no event (%v)", sc.Err()))
		}
		return soakResult{class: "truncated stream"}
	}
	if text.String() != want {
		return bad("wrong answer", fmt.Sprintf("%q; want %q", text.String(), want))
	}
	return soakResult{class: "ok"}
}

// goroutineSummary counts live goroutines by the function they were
// created by, for a leak's diagnosis.
func goroutineSummary() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	counts := map[string]int{}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		where := "?"
		for i, l := range lines {
			if strings.HasPrefix(l, "created by ") {
				where = strings.TrimPrefix(l, "created by ")
				if i > 1 {
					where = strings.TrimSpace(lines[1]) + " ← " + where
				}
			}
		}
		counts[where]++
	}
	var out []string
	for w, n := range counts {
		out = append(out, fmt.Sprintf("%5d %s", n, w))
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return strings.Join(out, "\n")
}
