package openairelay_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The bad-input catalogue: every request here is one a client might send by
// mistake or on purpose, each with the answer it must get. The rules for all
// of them:
//
//   - the answer is a clear error in OpenAI's shape
//     ({"error":{"message","type","param","code"}}) with the right status,
//     except where Go's own HTTP server must refuse the request before the
//     relay sees it (a header block over the server's limit: 431);
//   - nothing reaches the upstream (the fake counts every request that
//     presents its key, and records every request it answers);
//   - nothing is lost: a valid request right after is served;
//   - the upstream key never appears in an answer.
//
// Requests are sent as raw bytes on a TCP connection where the framing
// matters (sizes, lying Content-Length, paths), and with net/http otherwise.

// badFixture is one test's relay, upstream and what it answered.
type badFixture struct {
	t         *testing.T
	fake      *fakeopenai.Server
	e         *e2e
	upKey     string
	clientKey string
	client    *http.Client

	mu   sync.Mutex
	seen []rawResp
}

// rawResp is an answer of the relay.
type rawResp struct {
	status int
	header http.Header
	body   []byte
}

func (r rawResp) String() string {
	b := r.body
	if len(b) > 300 {
		b = append(b[:300:300], "…"...)
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

// badBlocks are lines added to the client block, the upstream block and the
// relay block of a fixture's config.
type badBlocks struct{ client, upstream, relay string }

// newBadFixture starts the relay with one client and one upstream key.
func newBadFixture(t *testing.T, name string, opts fakeopenai.Options, extra badBlocks) *badFixture {
	t.Helper()
	fake := fakeopenai.New(opts)
	t.Cleanup(fake.Close)
	upKey := "sk-badinput-" + name + "-upstream-7q3z"
	clientKey := "rk-badinput-" + name + "-client"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	env := "E2E_BAD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	t.Setenv(env, upKey)
	e := startRelay(t, fake, `
		client app {
			key `+clientKey+`
`+extra.client+`
		}
		upstream fake {UPSTREAM} {
			key {env.`+env+`}
`+extra.upstream+`
		}
`+extra.relay)
	f := &badFixture{
		t: t, fake: fake, e: e, upKey: upKey, clientKey: clientKey,
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true}},
	}
	t.Cleanup(func() {
		f.client.CloseIdleConnections()
		f.assertNoUpstreamKeyInAnswers()
	})
	return f
}

func (f *badFixture) record(r rawResp) rawResp {
	f.mu.Lock()
	f.seen = append(f.seen, r)
	f.mu.Unlock()
	return r
}

// assertNoUpstreamKeyInAnswers checks every answer the test got for the
// upstream key, whole, masked as OpenAI masks it, or its tail.
func (f *badFixture) assertNoUpstreamKeyInAnswers() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	needles := []string{f.upKey, fakeopenai.MaskKey(f.upKey), f.upKey[len(f.upKey)-6:]}
	for _, r := range f.seen {
		var all bytes.Buffer
		all.Write(r.body)
		_ = r.header.Write(&all)
		for _, n := range needles {
			if bytes.Contains(all.Bytes(), []byte(n)) {
				f.t.Errorf("an answer (%d) shows the upstream key (%q): %s", r.status, n, r)
			}
		}
	}
	f.e.assertNoSecrets([]string{f.upKey}, []string{f.clientKey})
}

// do sends a request with net/http and reads the whole answer.
func (f *badFixture) do(req *http.Request) rawResp {
	f.t.Helper()
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL, err)
	}
	return f.record(rawResp{resp.StatusCode, resp.Header, body})
}

// post sends body to the relay path with the client's key and the given
// content type ("" for none).
func (f *badFixture) post(path, contentType string, body []byte) rawResp {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://localhost:"+httpPort+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.clientKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return f.do(req)
}

// raw sends bytes on a new connection and reads one answer. If closeWrite,
// the sending side of the connection is shut once the bytes are sent.
func (f *badFixture) raw(request []byte, closeWrite bool) rawResp {
	f.t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	// Written concurrently with the read: the relay may answer (413)
	// before it has read everything, and stop reading.
	go func() {
		_, _ = conn.Write(request)
		if closeWrite {
			_ = conn.(*net.TCPConn).CloseWrite()
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		f.t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("reading the answer: %v", err)
	}
	return f.record(rawResp{resp.StatusCode, resp.Header, body})
}

// rawRequest builds a request's bytes: the request line, Host, the client's
// key, the extra header lines given and the body as it is (the caller says
// how it is framed).
func (f *badFixture) rawRequest(method, target string, headerLines []string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost:%s\r\nAuthorization: Bearer %s\r\n", method, target, httpPort, f.clientKey)
	for _, h := range headerLines {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// upstreamMark is how much the upstream has seen so far.
type upstreamMark struct{ count, records int }

func (f *badFixture) mark() upstreamMark {
	return upstreamMark{f.fake.Count(f.upKey), len(f.fake.Records())}
}

// assertNothingUpstream checks that the upstream saw no request since m.
// The fake counts a request as soon as it has read it, so a relayed request
// is counted before its answer can reach the client.
func (f *badFixture) assertNothingUpstream(m upstreamMark, what string) {
	f.t.Helper()
	if now := f.mark(); now != m {
		recs := f.fake.Records()
		var last string
		if len(recs) > 0 {
			r := recs[len(recs)-1]
			last = fmt.Sprintf(" (last: %s %s?%s model %.60q)", r.Method, r.Path, r.Query, r.Model)
		}
		f.t.Errorf("%s: the upstream saw %d request(s)%s; want none", what, max(now.count-m.count, now.records-m.records), last)
	}
}

// assertStillServes sends a valid request and checks it is answered by the
// upstream: nothing was lost.
func (f *badFixture) assertStillServes(what string) {
	f.t.Helper()
	prompt := "still alive after " + what
	r := f.post("/v1/chat/completions", "application/json", validBody(prompt))
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("echo: "+prompt)) {
		f.t.Errorf("after %s, a valid request got %s", what, r)
	}
}

// assertOpenAIError checks that r is an OpenAI-shaped error with the status
// given; typ and code are checked when not empty ("null" wants a null code).
func assertOpenAIError(t *testing.T, what string, r rawResp, status int, typ, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: got %s; want %d", what, r, status)
		return
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q; want application/json", what, ct)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &env); err != nil || env["error"] == nil {
		t.Errorf("%s: the body is not {\"error\":{...}}: %s", what, r)
		return
	}
	var e map[string]json.RawMessage
	if err := json.Unmarshal(env["error"], &e); err != nil {
		t.Errorf("%s: error is not an object: %s", what, r)
		return
	}
	for _, field := range []string{"message", "type", "param", "code"} {
		if _, ok := e[field]; !ok {
			t.Errorf("%s: the error has no %q: %s", what, field, r)
		}
	}
	var msg, gotType string
	if json.Unmarshal(e["message"], &msg) != nil || msg == "" {
		t.Errorf("%s: the error message is empty or not a string: %s", what, r)
	}
	if json.Unmarshal(e["type"], &gotType) != nil || gotType == "" {
		t.Errorf("%s: the error type is empty or not a string: %s", what, r)
	}
	if typ != "" && gotType != typ {
		t.Errorf("%s: error type %q; want %q", what, gotType, typ)
	}
	for _, field := range []string{"param", "code"} {
		var s *string
		if raw, ok := e[field]; ok && json.Unmarshal(raw, &s) != nil {
			t.Errorf("%s: %s is neither null nor a string: %s", what, field, raw)
		}
	}
	switch code {
	case "":
	case "null":
		if string(e["code"]) != "null" {
			t.Errorf("%s: code %s; want null", what, e["code"])
		}
	default:
		if string(e["code"]) != strconv.Quote(code) {
			t.Errorf("%s: code %s; want %q", what, e["code"], code)
		}
	}
}

// --- malformed bodies -------------------------------------------------------

// --- content types -------------------------------------------------------------

// --- body size -------------------------------------------------------------

// --- models that are not model names ---------------------------------------------

// --- paths ---------------------------------------------------------------------

// --- slow and vanishing clients -------------------------------------------------

// --- bad answers from the upstream ---------------------------------------------

// --- headers and keys ---------------------------------------------------------------
