package openairelay_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// validBody is a small valid chat request asking the fake to echo prompt.
func validBody(prompt string) []byte {
	b, _ := json.Marshal(map[string]any{
		"model":    "gpt-4o-mini",
		"messages": []map[string]string{{"role": "user", "content": prompt}},
	})
	return b
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

func TestBadInputMalformedJSON(t *testing.T) {
	f := newBadFixture(t, "json", fakeopenai.Options{}, badBlocks{})
	deep := func(open, close string, n int) string {
		return strings.Repeat(open, n) + strings.Repeat(close, n)
	}
	cases := []struct {
		name  string
		body  []byte
		param string // the param the error must name, if any
	}{
		{name: "not JSON", body: []byte("hello relay")},
		{name: "empty", body: nil},
		{name: "whitespace only", body: []byte(" \n\t ")},
		{name: "truncated object", body: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}`)},
		{name: "truncated string", body: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi`)},
		{name: "truncated after a key", body: []byte(`{"model"`)},
		{name: "only an open brace", body: []byte(`{`)},
		{name: "unquoted keys", body: []byte(`{model:"gpt-4o-mini",messages:[]}`)},
		{name: "single quotes", body: []byte(`{'model':'gpt-4o-mini'}`)},
		{name: "trailing comma", body: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],}`)},
		{name: "two objects", body: []byte(`{"model":"gpt-4o-mini"}{"model":"gpt-4o"}`)},
		{name: "trailing garbage", body: append(validBody("x"), " trailing"...)},
		{name: "NUL inside", body: []byte("{\"model\":\"gpt-4o-mini\"\x00,\"messages\":[]}")},
		{name: "a top-level array", body: []byte(`[{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}]`)},
		{name: "a top-level string", body: []byte(`"gpt-4o-mini"`)},
		{name: "a top-level number", body: []byte(`42`)},
		{name: "null", body: []byte(`null`)},
		{name: "model not a string", body: []byte(`{"model":42,"messages":[{"role":"user","content":"hi"}]}`), param: "model"},
		{name: "model an object", body: []byte(`{"model":{"name":"gpt-4o-mini"},"messages":[{"role":"user","content":"hi"}]}`), param: "model"},
		// Nesting: Go's JSON scanner allows 10,000 levels; the relay must
		// refuse anything past that, and whatever is not an object, without
		// recursing on the client's input.
		{name: "arrays nested 10,000 deep", body: []byte(deep("[", "]", 10000))},
		{name: "objects nested 10,001 deep", body: []byte(strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001))},
		{name: "messages nested 10,000 deep", body: []byte(`{"model":"gpt-4o-mini","messages":` + deep("[", "]", 10000) + `}`)},
		{name: "nested 100,000 deep", body: []byte(`{"model":"gpt-4o-mini","messages":` + deep("[", "]", 100000) + `}`)},
		{name: "nested 10,000 deep, unclosed", body: []byte(`{"model":"gpt-4o-mini","messages":` + strings.Repeat("[", 10000))},
		{name: "nested 100,000 deep, unbalanced", body: []byte(`{"model":"gpt-4o-mini","messages":` + strings.Repeat("[{", 50000) + strings.Repeat("]", 100000) + "}")},
		// Invalid UTF-8 anywhere in the body.
		{name: "invalid UTF-8 byte in content", body: []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9 \xff\"}]}")},
		{name: "overlong UTF-8 in content", body: []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}")},
		{name: "UTF-8 surrogate in content", body: []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}")},
		{name: "truncated UTF-8 sequence", body: []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xe2\x82\"}]}")},
		{name: "invalid UTF-8 in a key", body: []byte("{\"mod\xffel\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")},
		{name: "invalid UTF-8 in the model", body: []byte("{\"model\":\"gpt-4o-\xfe\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")},
		{name: "Latin-1 body", body: []byte("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"na\xefve r\xe9sum\xe9\"}]}")},
	}
	for _, tc := range cases {
		for _, endpoint := range []string{"/v1/chat/completions", "/v1/embeddings"} {
			what := tc.name + " to " + endpoint
			m := f.mark()
			r := f.post(endpoint, "application/json", tc.body)
			assertOpenAIError(t, what, r, http.StatusBadRequest, "invalid_request_error", "")
			if tc.param != "" && !bytes.Contains(r.body, []byte(`"param":"`+tc.param+`"`)) {
				t.Errorf("%s: the error does not name param %q: %s", what, tc.param, r)
			}
			f.assertNothingUpstream(m, what)
		}
		f.assertStillServes(tc.name)
	}

	// At the parser's limit a valid object is a valid request: it is
	// relayed, byte for byte, and the relay survives it.
	t.Run("valid JSON nested 9,999 deep is relayed intact", func(t *testing.T) {
		body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"deep"}],"metadata":` + deep("[", "]", 9998) + `}`)
		m := f.mark()
		r := f.post("/v1/chat/completions", "application/json", body)
		if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("echo: deep")) {
			t.Fatalf("got %s; want the upstream's answer", r)
		}
		if n := f.fake.Count(f.upKey) - m.count; n != 1 {
			t.Errorf("upstream saw %d requests; want 1", n)
		}
		recs := waitRecords(f.fake, m.records+1)
		if got := recs[len(recs)-1].Body; !bytes.Equal(got, body) {
			t.Errorf("the upstream got a body of %d bytes that differs from the %d sent", len(got), len(body))
		}
	})
}

// waitRecords waits (up to 2s) for the fake to hold at least n records: it
// records a request when its handler has returned, which may be just after
// the relay passed the answer on.
func waitRecords(fake *fakeopenai.Server, n int) []fakeopenai.Record {
	deadline := time.Now().Add(2 * time.Second)
	for {
		recs := fake.Records()
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- content types -------------------------------------------------------------

func TestBadInputContentType(t *testing.T) {
	f := newBadFixture(t, "ctype", fakeopenai.Options{}, badBlocks{})
	refused := []struct {
		name, ctype string
		body        []byte
	}{
		{"text/plain that is not JSON", "text/plain", []byte("please answer: what is 2+2?")},
		{"a real form", "application/x-www-form-urlencoded", []byte("model=gpt-4o-mini&messages=hello")},
		{"XML", "application/xml", []byte(`<request><model>gpt-4o-mini</model></request>`)},
		{"multipart without a boundary", "multipart/form-data", []byte("--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-mini\r\n--x--\r\n")},
		{"a malformed Content-Type", "application/json; =broken", validBody("x")},
		{"JSON content type, text body", "application/json", []byte("model: gpt-4o-mini")},
		{"octet-stream that is not JSON", "application/octet-stream", []byte{0x00, 0x01, 0x02, 0xff}},
	}
	for _, tc := range refused {
		m := f.mark()
		r := f.post("/v1/chat/completions", tc.ctype, tc.body)
		assertOpenAIError(t, tc.name, r, http.StatusBadRequest, "invalid_request_error", "")
		f.assertNothingUpstream(m, tc.name)
	}
	f.assertStillServes("wrong content types")

	// A JSON body under another content type (curl -d sends
	// form-urlencoded) is taken as JSON and sent on as application/json.
	accepted := []struct{ name, ctype string }{
		{"form-encoded JSON", "application/x-www-form-urlencoded"},
		{"text/plain JSON", "text/plain; charset=utf-8"},
		{"no content type", ""},
		{"JSON with charset", "application/json; charset=utf-8"},
	}
	for _, tc := range accepted {
		prompt := "accepted as " + tc.name
		body := validBody(prompt)
		m := f.mark()
		r := f.post("/v1/chat/completions", tc.ctype, body)
		if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("echo: "+prompt)) {
			t.Errorf("%s: got %s; want it served", tc.name, r)
			continue
		}
		recs := waitRecords(f.fake, m.records+1)
		rec := recs[len(recs)-1]
		// A body sent under another type goes on as JSON; one sent with no
		// type may go on without one.
		if ct := rec.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && (tc.ctype != "" || ct != "") {
			t.Errorf("%s: the upstream got Content-Type %q; want application/json", tc.name, ct)
		}
		if !bytes.Equal(rec.Body, body) {
			t.Errorf("%s: the upstream got body %q; want %q", tc.name, rec.Body, body)
		}
	}
}

// --- body size -------------------------------------------------------------

// sizedBody is a valid chat request of exactly n bytes (padded with spaces).
func sizedBody(t *testing.T, n int) []byte {
	base := validBody("size probe")
	if n < len(base) {
		t.Fatalf("a body of %d bytes cannot hold a request", n)
	}
	return append([]byte("{"+strings.Repeat(" ", n-len(base))), base[1:]...)
}

// chunked frames body as chunks of size n.
func chunked(body []byte, n int) []byte {
	var b bytes.Buffer
	for len(body) > 0 {
		c := body[:min(n, len(body))]
		body = body[len(c):]
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

func TestBadInputBodyTooLarge(t *testing.T) {
	f := newBadFixture(t, "size", fakeopenai.Options{}, badBlocks{relay: "max_body_size 1KB"})
	const limit = 1000 // 1KB as humanize reads it
	const path = "/v1/chat/completions"
	jsonCT := "Content-Type: application/json"
	cl := func(n int) string { return "Content-Length: " + strconv.Itoa(n) }
	te := "Transfer-Encoding: chunked"
	big := sizedBody(t, 5000)

	t.Run("at the limit is served", func(t *testing.T) {
		body := sizedBody(t, limit)
		r := f.raw(f.rawRequest("POST", path, []string{jsonCT, cl(len(body))}, body), false)
		if r.status != http.StatusOK {
			t.Errorf("a body of exactly max_body_size: %s; want 200", r)
		}
		r = f.raw(f.rawRequest("POST", path, []string{jsonCT, te}, chunked(body, 300)), false)
		if r.status != http.StatusOK {
			t.Errorf("a chunked body of exactly max_body_size: %s; want 200", r)
		}
	})

	tooLarge := []struct {
		name       string
		request    []byte
		closeWrite bool
	}{
		{"one byte over, honest Content-Length", f.rawRequest("POST", path, []string{jsonCT, cl(limit + 1)}, sizedBody(t, limit+1)), false},
		{"64 KB, honest Content-Length", f.rawRequest("POST", path, []string{jsonCT, cl(64 << 10)}, sizedBody(t, 64<<10)), false},
		{"chunked, no Content-Length", f.rawRequest("POST", path, []string{jsonCT, te}, chunked(big, 512)), false},
		{"chunked, one byte over", f.rawRequest("POST", path, []string{jsonCT, te}, chunked(sizedBody(t, limit+1), 100)), false},
		{"Content-Length over the limit but smaller than the body", f.rawRequest("POST", path, []string{jsonCT, cl(2000)}, big), false},
		{"Content-Length larger than the body, connection then closed", f.rawRequest("POST", path, []string{jsonCT, cl(5000)}, big[:500]), true},
		{"Content-Length far larger than anything", f.rawRequest("POST", path, []string{jsonCT, cl(1 << 40)}, big[:500]), true},
	}
	for _, tc := range tooLarge {
		m := f.mark()
		r := f.raw(tc.request, tc.closeWrite)
		assertOpenAIError(t, tc.name, r, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
		f.assertNothingUpstream(m, tc.name)
	}
	f.assertStillServes("bodies over max_body_size")

	// A Content-Length smaller than the body, and under the limit: the
	// request is that many bytes (the rest is the next request on the
	// connection), which here is truncated JSON: 400.
	t.Run("Content-Length under the limit and smaller than the body", func(t *testing.T) {
		m := f.mark()
		r := f.raw(f.rawRequest("POST", path, []string{jsonCT, cl(100)}, big), false)
		assertOpenAIError(t, "lying Content-Length 100", r, http.StatusBadRequest, "invalid_request_error", "")
		f.assertNothingUpstream(m, "lying Content-Length 100")
	})
	// A Content-Length under the limit but larger than the body, then the
	// client stops sending: the body ended early, 400.
	t.Run("Content-Length under the limit and larger than the body, connection then closed", func(t *testing.T) {
		m := f.mark()
		r := f.raw(f.rawRequest("POST", path, []string{jsonCT, cl(900)}, big[:300]), true)
		assertOpenAIError(t, "short body", r, http.StatusBadRequest, "invalid_request_error", "")
		f.assertNothingUpstream(m, "short body")
	})
	// Both framings at once: Go's server takes the chunked framing (RFC 9112
	// §6.3) or refuses the request; either way nothing over the limit
	// reaches the upstream.
	t.Run("Content-Length and chunked together", func(t *testing.T) {
		m := f.mark()
		r := f.raw(f.rawRequest("POST", path, []string{jsonCT, cl(10), te}, chunked(big, 512)), false)
		if r.status != http.StatusBadRequest {
			assertOpenAIError(t, "CL and TE", r, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
		}
		f.assertNothingUpstream(m, "CL and TE")
	})
	f.assertStillServes("lying framings")
}

// --- models that are not model names ---------------------------------------------

func TestBadInputModelNames(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	openKey, listedKey := "sk-badinput-model-open-00004x2q", "sk-badinput-model-listed-008k1w"
	fake.AddKey(openKey, fakeopenai.KeyLimits{})
	fake.AddKey(listedKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_BAD_MODEL_OPEN", openKey)
	t.Setenv("E2E_BAD_MODEL_LISTED", listedKey)
	// The "open" client's upstream serves any model (the upstream judges);
	// the "listed" client's upstream has a models list.
	e := startRelay(t, fake, `
		client open {
			key rk-badinput-model-open
			upstreams open
		}
		client listed {
			key rk-badinput-model-listed
			upstreams listed
		}
		upstream open {UPSTREAM} {
			key {env.E2E_BAD_MODEL_OPEN}
		}
		upstream listed {UPSTREAM} {
			models gpt-4o-mini gpt-4o text-embedding-3-small whisper-1
			key {env.E2E_BAD_MODEL_LISTED}
		}`)
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	var answers []rawResp
	send := func(key string, req *http.Request) rawResp {
		t.Helper()
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		r := rawResp{resp.StatusCode, resp.Header, body}
		answers = append(answers, r)
		return r
	}
	chat := func(key, model string) (rawResp, []byte) {
		body, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return send(key, req), body
	}

	models := map[string]string{
		"slash":             "gpt-4o-mini/../../admin",
		"dot-dot":           "../../../etc/passwd",
		"query":             "gpt-4o-mini?api-version=2024-01-01&x=../y",
		"fragment":          "gpt-4o-mini#frag",
		"percent-encoded":   "gpt-4o-mini%2F..%2F..%2Fadmin",
		"CRLF header":       "gpt-4o-mini\r\nX-Injected: yes",
		"LF header":         "gpt-4o-mini\nX-Injected: yes",
		"CRLF CRLF request": "x\r\n\r\nGET /admin HTTP/1.1\r\nHost: evil",
		"NUL":               "gpt-4o-mini\x00admin",
		"10 KB":             strings.Repeat("m", 10<<10),
		"10 KB with CRLF":   strings.Repeat("a\r\n", 10<<10/3),
		"space and quote":   `gpt 4o "mini"`,
		"unicode":           "gpt-4o-mini\u202e\u2028/..",
	}

	for name, model := range models {
		t.Run(name, func(t *testing.T) {
			// The listed upstream does not serve it: 404 model_not_found
			// from the relay, nothing upstream.
			before := fake.Count(openKey) + fake.Count(listedKey)
			r, _ := chat("rk-badinput-model-listed", model)
			assertOpenAIError(t, "listed upstream", r, http.StatusNotFound, "invalid_request_error", "model_not_found")
			if !bytes.Contains(r.body, []byte(`"param":"model"`)) {
				t.Errorf("the 404 does not name param model: %s", r)
			}
			if len(r.body) > 2000 {
				t.Errorf("the 404 echoes %d bytes of the client's model; want it bounded", len(r.body))
			}
			if n := fake.Count(openKey) + fake.Count(listedKey) - before; n != 0 {
				t.Errorf("the upstream saw %d requests for a model no upstream serves", n)
			}
			assertNoInjectedHeader(t, r.header)

			// The open upstream judges: the model reaches it exactly as
			// sent, inside the JSON body, and nowhere else.
			recsBefore := len(fake.Records())
			countBefore := fake.Count(openKey)
			r, body := chat("rk-badinput-model-open", model)
			assertOpenAIError(t, "open upstream", r, http.StatusNotFound, "invalid_request_error", "model_not_found")
			assertNoInjectedHeader(t, r.header)
			if n := fake.Count(openKey) - countBefore; n != 1 {
				t.Fatalf("the upstream saw %d requests; want exactly 1", n)
			}
			recs := waitRecords(fake, recsBefore+1)
			rec := recs[len(recs)-1]
			assertModelOnlyInBody(t, rec, "/v1/chat/completions", model)
			if !bytes.Equal(rec.Body, body) {
				t.Errorf("the upstream got body %.200q; want %.200q", rec.Body, body)
			}
		})
	}

	// A multipart body carries the model in a form field: it passes through
	// untouched, and the model stays in the body.
	t.Run("multipart", func(t *testing.T) {
		model := "whisper-1/../../admin?x=1\r\nX-Injected: yes"
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("model", model)
		fw, _ := mw.CreateFormFile("file", "a.wav")
		_, _ = fw.Write(bytes.Repeat([]byte("RIFF"), 64))
		mw.Close()
		recsBefore := len(fake.Records())
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/audio/transcriptions", bytes.NewReader(buf.Bytes()))
		req.Header.Set("Content-Type", mw.FormDataContentType())
		r := send("rk-badinput-model-open", req)
		assertOpenAIError(t, "multipart", r, http.StatusNotFound, "invalid_request_error", "model_not_found")
		recs := waitRecords(fake, recsBefore+1)
		rec := recs[len(recs)-1]
		assertModelOnlyInBody(t, rec, "/v1/audio/transcriptions", model)
		if !bytes.Equal(rec.Body, buf.Bytes()) {
			t.Error("the multipart body was changed on its way")
		}
	})

	// A model in the path (GET /v1/models/{id}) stays in the path, escaped:
	// never a query string or a header.
	for name, id := range map[string]string{
		"query in path": "gpt-4o-mini?x=1&y=2",
		"CRLF in path":  "gpt-4o-mini\r\nX-Injected: yes",
		"hash in path":  "gpt-4o-mini#x",
	} {
		t.Run(name, func(t *testing.T) {
			recsBefore := len(fake.Records())
			req, _ := http.NewRequest(http.MethodGet, relayBase+"/models/"+url.PathEscape(id), nil)
			r := send("rk-badinput-model-open", req)
			assertOpenAIError(t, name, r, http.StatusNotFound, "invalid_request_error", "model_not_found")
			assertNoInjectedHeader(t, r.header)
			recs := waitRecords(fake, recsBefore+1)
			if len(recs) != recsBefore+1 {
				t.Fatalf("the upstream saw %d requests; want 1", len(recs)-recsBefore)
			}
			rec := recs[len(recs)-1]
			if rec.Path != "/v1/models/"+id || rec.Query != "" {
				t.Errorf("upstream path %q query %q; want path %q and no query", rec.Path, rec.Query, "/v1/models/"+id)
			}
			assertHeadersClean(t, rec, id)
		})
	}

	for _, r := range answers {
		for _, k := range []string{openKey, listedKey, fakeopenai.MaskKey(openKey), fakeopenai.MaskKey(listedKey)} {
			if bytes.Contains(r.body, []byte(k)) {
				t.Errorf("an answer shows an upstream key: %s", r)
			}
		}
	}
	e.assertNoSecrets([]string{openKey, listedKey}, []string{"rk-badinput-model-open", "rk-badinput-model-listed"})
}

// A client limited to some models must not reach another by spelling the
// member differently: JSON object keys are case-sensitive, but many
// OpenAI-compatible servers decode with Go's encoding/json, which matches
// "Model" or "MODEL" to the model field (and takes the last of duplicates).
// The fake decodes the same way, so it shows the model an upstream of that
// kind acts on: it must be one the client may use, or nothing may reach the
// upstream.
func TestBadInputModelSmuggling(t *testing.T) {
	// The client may use gpt-4o-mini only.
	f := newBadFixture(t, "smuggle", fakeopenai.Options{}, badBlocks{client: "models gpt-4o-mini"})
	msgs := `"messages":[{"role":"user","content":"smuggle"}]`
	cases := []struct{ name, body string }{
		{"allowed, then a capitalised Model", `{"model":"gpt-4o-mini","Model":"gpt-4o",` + msgs + `}`},
		{"allowed, then MODEL", `{"model":"gpt-4o-mini","MODEL":"gpt-4o",` + msgs + `}`},
		{"only a capitalised Model", `{"Model":"gpt-4o",` + msgs + `}`},
		{"mixed case after the messages", `{"model":"gpt-4o-mini",` + msgs + `,"mOdEl":"gpt-4o"}`},
		{"duplicate model, the allowed one first", `{"model":"gpt-4o-mini","model":"gpt-4o",` + msgs + `}`},
		{"duplicate model, the allowed one last", `{"model":"gpt-4o","model":"gpt-4o-mini",` + msgs + `}`},
		{"escaped member name", `{"model":"gpt-4o",` + msgs + `}`},
		{"escaped allowed, plain disallowed", `{"model":"gpt-4o-mini","model":"gpt-4o",` + msgs + `}`},
	}
	for _, tc := range cases {
		m := f.mark()
		r := f.post("/v1/chat/completions", "application/json", []byte(tc.body))
		if r.status == http.StatusOK {
			recs := waitRecords(f.fake, m.records+1)
			if got := recs[len(recs)-1].Model; got != "gpt-4o-mini" {
				t.Errorf("%s: a client limited to gpt-4o-mini was served by the upstream as model %q", tc.name, got)
			}
			continue
		}
		if r.status/100 != 4 {
			t.Errorf("%s: got %s; want it refused (4xx) or served as gpt-4o-mini", tc.name, r)
			continue
		}
		assertOpenAIError(t, tc.name, r, r.status, "invalid_request_error", "")
		f.assertNothingUpstream(m, tc.name)
	}
	// Other endpoints and shapes: no model, a nested model, another
	// Content-Type, form parts.
	form := func(parts ...[3]string) (string, []byte) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for _, p := range parts {
			if p[2] != "" {
				fw, _ := mw.CreateFormFile(p[0], p[2])
				fw.Write([]byte(p[1]))
				continue
			}
			mw.WriteField(p[0], p[1])
		}
		mw.Close()
		return mw.FormDataContentType(), buf.Bytes()
	}
	twoModels, twoModelsBody := form([3]string{"model", "gpt-4o-mini", ""}, [3]string{"model", "gpt-4o", ""}, [3]string{"file", "RIFF", "a.wav"})
	fileModel, fileModelBody := form([3]string{"file", "RIFF", "a.wav"}, [3]string{"model", "gpt-4o", "model.txt"})
	shapes := []struct {
		name, path, contentType, body string
		status                        int
	}{
		{"no model", "/v1/chat/completions", "application/json", `{` + msgs + `}`, 400},
		{"no model, images", "/v1/images/generations", "application/json", `{"prompt":"a cat"}`, 400},
		{"no model, moderations: the API's default is checked", "/v1/moderations", "application/json", `{"input":"hi"}`, 403},
		{"JSON sent as text/plain", "/v1/audio/speech", "text/plain", `{"model":"gpt-4o","input":"hi","voice":"alloy"}`, 403},
		{"JSON sent as text/plain to any endpoint", "/v1/realtime/sessions", "text/plain", `{"model":"gpt-4o"}`, 403},
		{"nested session.model", "/v1/realtime/client_secrets", "application/json", `{"session":{"type":"realtime","model":"gpt-4o"}}`, 403},
		{"two model parts", "/v1/audio/transcriptions", twoModels, string(twoModelsBody), 400},
		{"a model part sent as a file", "/v1/audio/transcriptions", fileModel, string(fileModelBody), 400},
		{"a batch of a file the relay never saw", "/v1/batches", "application/json", `{"input_file_id":"file-abc","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 404},
	}
	for _, tc := range shapes {
		m := f.mark()
		r := f.post(tc.path, tc.contentType, []byte(tc.body))
		if r.status != tc.status {
			t.Errorf("%s: got %s; want %d", tc.name, r, tc.status)
			continue
		}
		assertOpenAIError(t, tc.name, r, r.status, "invalid_request_error", "")
		f.assertNothingUpstream(m, tc.name)
	}
	f.assertStillServes("model smuggling")
}

func assertNoInjectedHeader(t *testing.T, h http.Header) {
	t.Helper()
	if h.Get("X-Injected") != "" {
		t.Errorf("the answer carries an injected header X-Injected: %q", h.Get("X-Injected"))
	}
}

// assertModelOnlyInBody checks that a request the upstream got has the path
// wanted, no query, the model exactly as sent (read from the body), and
// neither the model nor anything it tried to inject in a header.
func assertModelOnlyInBody(t *testing.T, rec fakeopenai.Record, path, model string) {
	t.Helper()
	if rec.Path != path || rec.Query != "" {
		t.Errorf("upstream path %q query %q; want %q and no query", rec.Path, rec.Query, path)
	}
	if rec.Model != model {
		t.Errorf("upstream model %.80q; want %.80q", rec.Model, model)
	}
	assertHeadersClean(t, rec, model)
}

func assertHeadersClean(t *testing.T, rec fakeopenai.Record, model string) {
	t.Helper()
	if rec.Header.Get("X-Injected") != "" {
		t.Errorf("a header was injected upstream: X-Injected: %q", rec.Header.Get("X-Injected"))
	}
	for name, values := range rec.Header {
		for _, v := range values {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Errorf("upstream header %s carries a control character: %.80q", name, v)
			}
			if len(model) >= 8 && strings.Contains(v, model) {
				t.Errorf("upstream header %s carries the model: %.80q", name, v)
			}
		}
	}
}

// --- paths ---------------------------------------------------------------------

func TestBadInputDotPaths(t *testing.T) {
	f := newBadFixture(t, "paths", fakeopenai.Options{}, badBlocks{})
	body := validBody("path probe")
	paths := []string{
		"/v1/../admin",
		"/v1/../v1/chat/completions",
		"/v1/%2e%2e/models",
		"/v1/%2E%2E/%2E%2E/admin",
		"/v1/./models",
		"/v1/%2e/models",
		"/v1/models/..",
		"/v1/models/.",
		"/v1/chat/completions/../../admin",
		"/v1/chat/./completions",
		"/v1/..%2fadmin",
		"/v1/models%2f..%2f..%2fadmin",
		"/v1/.%2e/models",
		"/v1/%2e./models",
		"/v1/files/..%2F..%2Fadmin",
		"/v1/..",
		"/v1/.",
		"/../v1/models",
		"/v1/models/%2e%2e%2f%2e%2e%2fadmin",
	}
	for _, p := range paths {
		for _, method := range []string{"GET", "POST"} {
			what := method + " " + p
			m := f.mark()
			var req []byte
			if method == "POST" {
				req = f.rawRequest(method, p, []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body)
			} else {
				req = f.rawRequest(method, p, nil, nil)
			}
			r := f.raw(req, false)
			assertOpenAIError(t, what, r, http.StatusNotFound, "invalid_request_error", "")
			f.assertNothingUpstream(m, what)
		}
	}
	// Backslashes and NUL are no path a client needs: refused as well
	// (404 from the relay, or 400 from Go's server for an unparsable target).
	for _, p := range []string{"/v1/%5c..%5cadmin", "/v1/..%5cadmin", "/v1/models%00/../admin", "/v1/models/%00"} {
		m := f.mark()
		r := f.raw(f.rawRequest("GET", p, nil, nil), false)
		if r.status != http.StatusBadRequest {
			assertOpenAIError(t, p, r, http.StatusNotFound, "invalid_request_error", "")
		}
		f.assertNothingUpstream(m, p)
	}
	f.assertStillServes("dot-segment paths")
}

// --- slow and vanishing clients -------------------------------------------------

// trickleReader gives its data a few bytes at a time, pausing between reads.
type trickleReader struct {
	data  []byte
	step  int
	pause time.Duration
}

func (r *trickleReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	n := copy(p[:min(len(p), r.step)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// relayGoroutines returns the stacks of the goroutines running the relay's
// own code, by the relay function nearest to the bottom of each stack (what
// the goroutine is for, whatever it is doing at the moment: the snapshot
// writer is the same goroutine sleeping or saving; the fake upstream and the
// tests are not the relay).
func relayGoroutines() map[string][]string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string][]string{}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		fn := ""
		for line := range strings.SplitSeq(g, "\n") {
			if !strings.HasPrefix(line, "github.com/caddyrelay/openairelay") ||
				strings.HasPrefix(line, "github.com/caddyrelay/openairelay_test") ||
				strings.HasPrefix(line, "github.com/caddyrelay/openairelay/internal/fakeopenai") {
				continue
			}
			fn = line
			if i := strings.LastIndexByte(fn, '('); i > 0 {
				fn = fn[:i] // the arguments
			}
		}
		if fn != "" {
			out[fn] = append(out[fn], g)
		}
	}
	return out
}

// relayLeaks returns the stacks of relay goroutines beyond those of the
// baseline, function by function: the relay's background loops (one prober
// per config, ...) are in the baseline, and a config that replaced another
// has the same number; a request's goroutines must all be gone.
func relayLeaks(baseline map[string][]string) []string {
	var out []string
	for fn, stacks := range relayGoroutines() {
		if extra := len(stacks) - len(baseline[fn]); extra > 0 {
			out = append(out, stacks[:extra]...)
		}
	}
	return out
}

// settleGoroutines waits (up to wait) for the goroutine count to come back to
// at most limit and for no relay goroutine to be left beyond the baseline;
// it returns the last count and the relay goroutines left.
func settleGoroutines(limit int, baseline map[string][]string, wait time.Duration) (int, []string) {
	deadline := time.Now().Add(wait)
	for {
		n, left := runtime.NumGoroutine(), relayLeaks(baseline)
		if (n <= limit && len(left) == 0) || time.Now().After(deadline) {
			return n, left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inFlight is the sum of limits.in_flight over every key of the admin API.
func inFlight(t *testing.T) int64 {
	var keys []struct {
		Limits struct {
			InFlight int64 `json:"in_flight"`
		} `json:"limits"`
	}
	adminGet(t, "/openai_relay/keys", &keys)
	var n int64
	for _, k := range keys {
		n += k.Limits.InFlight
	}
	return n
}

// settleInFlight waits (up to wait) for no request to be in flight on any
// key, and returns what is left.
func settleInFlight(t *testing.T, wait time.Duration) int64 {
	return settleInFlightTo(t, 0, wait)
}

// settleInFlightTo waits (up to wait) for at most target requests to be in
// flight over every key, and returns how many are.
func settleInFlightTo(t *testing.T, target int64, wait time.Duration) int64 {
	deadline := time.Now().Add(wait)
	for {
		n := inFlight(t)
		if n <= target || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBadInputSlowAndVanishingClients(t *testing.T) {
	f := newBadFixture(t, "slow", fakeopenai.Options{StreamChunks: 40, ChunkDelay: 100 * time.Millisecond}, badBlocks{})

	t.Run("body trickled over a second", func(t *testing.T) {
		for _, known := range []bool{false, true} {
			prompt := fmt.Sprintf("slowly sent, length known %v", known)
			body := validBody(prompt)
			tr := &trickleReader{data: body, step: max(1, len(body)/25), pause: 40 * time.Millisecond}
			req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions", tr)
			if known {
				req.ContentLength = int64(len(body))
			}
			req.Header.Set("Authorization", "Bearer "+f.clientKey)
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			r := f.do(req)
			if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("echo: "+prompt)) {
				t.Errorf("a slow client (length known %v) got %s", known, r)
			}
			if el := time.Since(start); el < 900*time.Millisecond {
				t.Errorf("the body took %v; the reader did not trickle", el)
			}
		}
	})

	// Warm up, then take the goroutine count the disconnects must return to.
	f.assertStillServes("the warm-up")
	f.client.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	baseline, relayBaseline := runtime.NumGoroutine(), relayGoroutines()

	t.Run("disconnect mid-body", func(t *testing.T) {
		m := f.mark()
		body := validBody(strings.Repeat("never finished ", 40))
		for i := range 20 {
			conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var req []byte
			if i%2 == 0 {
				req = f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body[:len(body)/2])
			} else {
				c := chunked(body, 64)
				req = f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Transfer-Encoding: chunked"}, c[:len(c)/2])
			}
			if _, err := conn.Write(req); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			conn.Close()
		}
		time.Sleep(300 * time.Millisecond)
		f.assertNothingUpstream(m, "clients that left mid-body")
		n, left := settleGoroutines(baseline+3, relayBaseline, 5*time.Second)
		if n > baseline+3 || len(left) > 0 {
			t.Errorf("after 20 clients left mid-body: %d goroutines (baseline %d); relay goroutines left:\n%s",
				n, baseline, strings.Join(left[:min(5, len(left))], "\n\n"))
		}
	})

	t.Run("disconnect while the upstream is slow to answer", func(t *testing.T) {
		f.fake.AddFault(fakeopenai.Fault{Latency: 4 * time.Second, Count: 1, Key: f.upKey})
		recsBefore := len(f.fake.Records())
		body := validBody("waiting for headers")
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		conn.Close()
		left := time.Now()
		recs := waitRecords(f.fake, recsBefore+1)
		if len(recs) <= recsBefore {
			t.Fatal("the upstream request was still running 2s after the client left (its answer was due in 4s)")
		}
		if st := recs[len(recs)-1].Status; st != 499 {
			t.Errorf("the upstream's record has status %d; want 499 (its client, the relay, went away)", st)
		}
		t.Logf("upstream request ended %v after the client left", time.Since(left).Round(time.Millisecond))
	})

	t.Run("disconnect mid-stream", func(t *testing.T) {
		recsBefore := len(f.fake.Records())
		body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a long story told slowly"}]}`)
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %d", resp.StatusCode)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: ") {
			t.Fatalf("first line %q, %v", line, err)
		}
		start := time.Now()
		conn.Close()
		// The stream takes 4s upstream (40 chunks, 100ms apart); the fake
		// records it when its handler returns.
		recs := waitRecords(f.fake, recsBefore+1)
		if len(recs) <= recsBefore {
			t.Fatal("the upstream stream was still running 2s after the client left")
		}
		t.Logf("upstream stream ended %v after the client left", time.Since(start).Round(time.Millisecond))
	})

	// Whatever left: no request in flight on the key, no goroutine left.
	if n := settleInFlight(t, 3*time.Second); n != 0 {
		t.Errorf("%d requests still in flight 3s after every client left", n)
	}
	f.assertStillServes("clients that left")
	f.client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	n, left := settleGoroutines(baseline+3, relayBaseline, 5*time.Second)
	if n > baseline+3 || len(left) > 0 {
		t.Errorf("after the vanishing clients: %d goroutines (baseline %d); relay goroutines left:\n%s",
			n, baseline, strings.Join(left[:min(5, len(left))], "\n\n"))
	}
}

// Clients that announce a large body (within max_body_size) and then send it
// slowly, or never, must not make the relay hold memory for bytes it has not
// received: 8 such clients announcing 8 MiB each would otherwise pin 64 MiB
// (and 100 clients at the default 32 MiB limit, 3.2 GiB). Caddy runs in this
// process, so its heap is measured directly.
func TestBadInputAnnouncedBodyDoesNotPinMemory(t *testing.T) {
	f := newBadFixture(t, "announce", fakeopenai.Options{}, badBlocks{relay: "max_body_size 8MiB"})
	const clients, announced = 8, 8 << 20
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	m := f.mark()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		req := f.rawRequest("POST", "/v1/chat/completions",
			[]string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(announced)}, []byte(`{"model":`))
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
	}
	// Let every request reach the relay and start reading its body.
	time.Sleep(500 * time.Millisecond)
	grown := int64(heap()) - int64(before)
	t.Logf("%d clients announcing %d MiB each and sending 9 bytes: heap grew by %.1f MiB",
		clients, announced>>20, float64(grown)/(1<<20))
	if grown > 16<<20 {
		t.Errorf("the heap grew by %.0f MiB for %d clients that sent 9 bytes each: the relay allocates the announced Content-Length up front",
			float64(grown)/(1<<20), clients)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	time.Sleep(200 * time.Millisecond)
	f.assertNothingUpstream(m, "clients that announced large bodies")
	f.assertStillServes("clients that announced large bodies")
}

// --- bad answers from the upstream ---------------------------------------------

// An OpenAI-compatible upstream may answer a 200 whose body is not the JSON
// or the event stream it should be (a buggy self-hosted server, a proxy's
// error page, a cut connection). The relay reads usage from such answers; it
// must pass them on and end the response properly, never fail half-way (a
// panic aborts the client's connection), and give its reservation back.
func TestBadInputMalformedUpstreamAnswers(t *testing.T) {
	var answer atomic.Value // upstreamAnswer
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/models") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"object":"list","data":[]}`)
			return
		}
		a := answer.Load().(upstreamAnswer)
		w.Header().Set("Content-Type", a.contentType)
		w.WriteHeader(http.StatusOK)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		_, _ = io.WriteString(w, a.body)
	}))
	defer up.Close()
	upKey := "sk-badinput-upstream-answers-k9t2"
	t.Setenv("E2E_BAD_ANSWERS", upKey)
	fake := fakeopenai.New(fakeopenai.Options{}) // unused: the upstream here is up
	defer fake.Close()
	e := startRelay(t, fake, `
		client app {
			key rk-badinput-answers-client
		}
		upstream odd `+up.URL+`/v1 {
			key {env.E2E_BAD_ANSWERS}
		}`)
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()

	const sse, js = "text/event-stream", "application/json"
	cases := []struct {
		name, path, body string
		answer           upstreamAnswer
	}{
		{"stream event with an unterminated member", "/chat/completions", chatStreamBody,
			upstreamAnswer{sse, "data: {\"usage\"0\"\\\n\ndata: [DONE]\n\n"}},
		{"stream event cut at the end of the body", "/chat/completions", chatStreamBody,
			upstreamAnswer{sse, "data: {\"usage\"0\"\\"}},
		{"stream event of truncated JSON", "/chat/completions", chatStreamBody,
			upstreamAnswer{sse, "data: {\"choices\":[],\"usage\":\n\ndata: [DONE]\n\n"}},
		{"stream event with a usage of the wrong types", "/chat/completions", chatStreamBody,
			upstreamAnswer{sse, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":\"many\",\"total_tokens\":-1}}\n\ndata: [DONE]\n\n"}},
		{"stream event of invalid UTF-8", "/chat/completions", chatStreamBody,
			upstreamAnswer{sse, "data: \xff\xfe{\"usage\n\ndata: [DONE]\n\n"}},
		{"stream event with a usage member only", "/completions", `{"model":"gpt-4o-mini","stream":true,"prompt":"x"}`,
			upstreamAnswer{sse, "data: {\"usage\"\n\n"}},
		{"responses event with an unterminated member", "/responses", `{"model":"gpt-4o-mini","stream":true,"input":"x"}`,
			upstreamAnswer{sse, "event: response.completed\ndata: {\"response\"0\"\\\n\n"}},
		{"responses event with an unterminated usage", "/responses", `{"model":"gpt-4o-mini","stream":true,"input":"x"}`,
			upstreamAnswer{sse, "event: response.completed\ndata: {\"response\":{\"usage\"0\"\\}}\n\n"}},
		{"JSON answer with an unterminated member", "/chat/completions", string(validBody("x")),
			upstreamAnswer{js, "{\"usage\"0\"\\"}},
		{"JSON answer truncated", "/chat/completions", string(validBody("x")),
			upstreamAnswer{js, `{"id":"x","usage":{"prompt_tokens":1`}},
		{"JSON answer with a huge number", "/embeddings", `{"model":"text-embedding-3-small","input":"x"}`,
			upstreamAnswer{js, `{"usage":{"prompt_tokens":1e999,"total_tokens":99999999999999999999999}}`}},
		{"a 200 that is not JSON", "/chat/completions", string(validBody("x")),
			upstreamAnswer{js, "<html>Bad gateway</html>"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answer.Store(tc.answer)
			before := inFlight(t)
			req, _ := http.NewRequest(http.MethodPost, relayBase+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer rk-badinput-answers-client")
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Errorf("the answer was cut (%v) after %q: the relay failed while relaying it", err, got)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d; want the upstream's 200", resp.StatusCode)
			}
			if tc.answer.contentType == js && string(got) != tc.answer.body {
				t.Errorf("the client got %q; want the upstream's body %q as it was", got, tc.answer.body)
			}
			if n := settleInFlightTo(t, before, 2*time.Second); n > before {
				t.Errorf("%d requests in flight after the answer, %d before: the reservation was not given back", n, before)
			}
		})
	}
	logs, _ := os.ReadFile(e.logFile)
	if i := bytes.Index(logs, []byte("panic")); i >= 0 {
		t.Errorf("the relay panicked: %.600s", logs[i:])
	}
	if strings.Contains(string(logs), upKey) {
		t.Error("the upstream key appears in the log")
	}
}

const chatStreamBody = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"x"}]}`

type upstreamAnswer struct{ contentType, body string }

// --- headers and keys ---------------------------------------------------------------

func TestBadInputHugeHeaders(t *testing.T) {
	f := newBadFixture(t, "headers", fakeopenai.Options{}, badBlocks{})
	body := validBody("huge headers")
	req := func(extra ...string) []byte {
		return f.rawRequest("POST", "/v1/chat/completions",
			append([]string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, extra...), body)
	}
	refusedHeaders := func(what string, r rawResp) {
		t.Helper()
		switch {
		case r.status == http.StatusRequestHeaderFieldsTooLarge:
		case r.status >= 400 && r.status < 500:
			assertOpenAIError(t, what, r, r.status, "", "")
		default:
			t.Errorf("%s: got %s; want 431 or an OpenAI-shaped 4xx", what, r)
		}
	}

	// A 60 KB header value is far beyond what any OpenAI client sends and
	// what OpenAI's edge accepts: Caddy's own 431, or an error from the
	// relay, never a crash and never the upstream.
	for _, size := range []int{60 << 10, 2 << 20} {
		what := fmt.Sprintf("a %d KB X-Junk header", size>>10)
		m := f.mark()
		refusedHeaders(what, f.raw(req("X-Junk: "+strings.Repeat("j", size)), false))
		f.assertNothingUpstream(m, what)
	}

	// Many headers, small one by one but 100 KB together.
	t.Run("many headers", func(t *testing.T) {
		var many []string
		for i := range 2000 {
			many = append(many, fmt.Sprintf("X-Junk-%d: %s", i, strings.Repeat("k", 40)))
		}
		m := f.mark()
		refusedHeaders("2,000 headers", f.raw(req(many...), false))
		f.assertNothingUpstream(m, "2,000 headers")
	})

	// A 10 KB credential is simply a wrong one, and is not echoed.
	for _, h := range []string{"Authorization: Bearer ", "Api-Key: "} {
		what := "a 10 KB " + strings.TrimSuffix(strings.Fields(h)[0], ":")
		junk := "rk-" + strings.Repeat("Z", 10<<10)
		raw := bytes.Replace(req(h+junk), []byte("Authorization: Bearer "+f.clientKey+"\r\n"), nil, 1)
		m := f.mark()
		r := f.raw(raw, false)
		assertOpenAIError(t, what, r, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key")
		if bytes.Contains(r.body, []byte(strings.Repeat("Z", 64))) {
			t.Errorf("%s: the answer echoes the credential: %s", what, r)
		}
		f.assertNothingUpstream(m, what)
	}
	f.assertStillServes("huge headers")
}

func TestBadInputClientKeys(t *testing.T) {
	f := newBadFixture(t, "auth", fakeopenai.Options{}, badBlocks{})
	body := validBody("who am I")
	send := func(header ...string) rawResp {
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		return f.do(req)
	}
	refused := []struct {
		name   string
		header []string
		code   string
	}{
		{"no key at all", nil, "null"},
		{"empty bearer", []string{"Authorization", "Bearer "}, "null"},
		{"bearer without a space", []string{"Authorization", "Bearer" + f.clientKey}, ""},
		{"basic auth", []string{"Authorization", "Basic cms6c2VjcmV0"}, ""},
		{"a wrong key", []string{"Authorization", "Bearer rk-not-a-client-of-this-relay"}, "invalid_api_key"},
		{"a wrong api-key", []string{"Api-Key", "rk-not-a-client-of-this-relay"}, "invalid_api_key"},
		{"the upstream key itself", []string{"Authorization", "Bearer " + f.upKey}, "invalid_api_key"},
		{"a key with a suffix", []string{"Authorization", "Bearer " + f.clientKey + "x"}, "invalid_api_key"},
		{"a key prefix", []string{"Authorization", "Bearer " + f.clientKey[:len(f.clientKey)-1]}, "invalid_api_key"},
	}
	for _, tc := range refused {
		m := f.mark()
		r := send(tc.header...)
		assertOpenAIError(t, tc.name, r, http.StatusUnauthorized, "invalid_request_error", tc.code)
		f.assertNothingUpstream(m, tc.name)
	}
	served := []struct {
		name   string
		header []string
	}{
		{"api-key header", []string{"Api-Key", f.clientKey}},
		{"bearer in lower case", []string{"Authorization", "bearer " + f.clientKey}},
		{"bearer with extra spaces", []string{"Authorization", "Bearer   " + f.clientKey + "  "}},
	}
	for _, tc := range served {
		r := send(tc.header...)
		if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("echo: who am I")) {
			t.Errorf("%s: got %s; want it served", tc.name, r)
		}
	}
	for _, rec := range f.fake.Records() {
		if rec.Key != f.upKey {
			t.Errorf("the upstream got key %q; want the configured upstream key", rec.Key)
		}
	}
}

// TestBadInputCrashes holds the inputs that once crashed the handler: each
// gets an answer, and the relay keeps serving.
func TestBadInputCrashes(t *testing.T) {
	f := newBadFixture(t, "crash", fakeopenai.Options{}, badBlocks{})
	r := f.post("/v1/chat/completions", "application/json",
		[]byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":null,"messages":[{"role":"user","content":"null options"}]}`))
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("data: [DONE]")) || bytes.Contains(r.body, []byte(`"usage":{`)) {
		t.Errorf("stream with stream_options null: got %s; want a whole stream without the usage the client did not ask for", r)
	}

	req, _ := http.NewRequest(http.MethodGet, "http://localhost:"+httpPort+"/v1/models/%ff%fe", nil)
	req.Header.Set("Authorization", "Bearer "+f.clientKey)
	m := f.mark()
	assertOpenAIError(t, "model id that is not UTF-8", f.do(req), http.StatusNotFound, "invalid_request_error", "model_not_found")
	f.assertNothingUpstream(m, "model id that is not UTF-8")

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("model", "whisper-\xff")
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write([]byte("RIFF"))
	mw.Close()
	m = f.mark()
	assertOpenAIError(t, "form model that is not UTF-8", f.post("/v1/audio/transcriptions", mw.FormDataContentType(), buf.Bytes()), http.StatusBadRequest, "invalid_request_error", "")
	f.assertNothingUpstream(m, "form model that is not UTF-8")
	f.assertStillServes("crashing inputs")
}

// TestBadInputMethodsAndEndpoints checks that only the API's methods are
// relayed and that a client reaches only the endpoints it is allowed.
func TestBadInputMethodsAndEndpoints(t *testing.T) {
	f := newBadFixture(t, "endpoints", fakeopenai.Options{}, badBlocks{client: "endpoints chat/completions files"})
	for _, method := range []string{"TRACE", "PUT", "PATCH", "OPTIONS"} {
		req, _ := http.NewRequest(method, "http://localhost:"+httpPort+"/v1/chat/completions", bytes.NewReader(validBody("method")))
		req.Header.Set("Authorization", "Bearer "+f.clientKey)
		m := f.mark()
		assertOpenAIError(t, method, f.do(req), http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed")
		f.assertNothingUpstream(m, method)
	}
	for _, path := range []string{"/v1/embeddings", "/v1/realtime/client_secrets", "/v1/batches"} {
		m := f.mark()
		assertOpenAIError(t, path, f.post(path, "application/json", []byte(`{"model":"gpt-4o-mini","input":"x"}`)), http.StatusForbidden, "invalid_request_error", "endpoint_not_allowed")
		f.assertNothingUpstream(m, path)
	}
	f.assertStillServes("endpoints")
}

// TestBadInputModelListFailsClosed checks that a model list the relay
// cannot read is not passed on unfiltered to a client limited to some
// models.
func TestBadInputModelListFailsClosed(t *testing.T) {
	f := newBadFixture(t, "modellist", fakeopenai.Options{}, badBlocks{client: "models gpt-4o-mini"})
	get := func() rawResp {
		req, _ := http.NewRequest(http.MethodGet, "http://localhost:"+httpPort+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+f.clientKey)
		return f.do(req)
	}
	if r := get(); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"gpt-4o-mini"`)) || bytes.Contains(r.body, []byte(`"gpt-4o"`)) {
		t.Errorf("model list: %s; want gpt-4o-mini only", r)
	}
	for _, body := range []string{`{"object":"list","data":"gpt-4o"}`, `["gpt-4o"]`, `{"object":"list"}`} {
		f.fake.AddFault(fakeopenai.Fault{Status: http.StatusOK, Path: "/models", Body: body, Count: 1})
		assertOpenAIError(t, "model list "+body, get(), http.StatusBadGateway, "", "")
	}
	f.assertStillServes("unreadable model lists")
}

// TestBadInputUpstreamEchoesItsKey checks that an upstream that echoes the
// key it was sent, in a successful answer's body or headers, or redirects
// to its own address, reveals neither to the client.
func TestBadInputUpstreamEchoesItsKey(t *testing.T) {
	f := newBadFixture(t, "echo", fakeopenai.Options{}, badBlocks{})
	f.fake.AddFault(fakeopenai.Fault{Status: http.StatusOK, Count: 1, Path: "/chat/completions",
		Body:   `{"id":"chatcmpl-echo","object":"chat.completion","debug":{"authorization":"Bearer ` + f.upKey + `"},"choices":[]}`,
		Header: http.Header{"X-Debug-Auth": {"Bearer " + f.upKey}}})
	r := f.post("/v1/chat/completions", "application/json", validBody("echo"))
	if r.status != http.StatusOK || bytes.Contains(r.body, []byte(f.upKey)) || strings.Contains(r.header.Get("X-Debug-Auth"), f.upKey) {
		t.Errorf("an answer echoing the upstream key: %s (X-Debug-Auth %q)", r, r.header.Get("X-Debug-Auth"))
	}
	if !bytes.Contains(r.body, []byte(`"chatcmpl-echo"`)) {
		t.Errorf("the rest of the answer was lost: %s", r)
	}
	up := strings.TrimSuffix(f.fake.URL(), "/v1")
	f.fake.AddFault(fakeopenai.Fault{Status: http.StatusTemporaryRedirect, Count: 1, Path: "/files",
		Body: `{}`, Header: http.Header{"Location": {up + "/v1/files/file-abc/content"}}})
	req, _ := http.NewRequest(http.MethodGet, "http://localhost:"+httpPort+"/v1/files", nil)
	req.Header.Set("Authorization", "Bearer "+f.clientKey)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); strings.Contains(loc, up) || loc != "/v1/files/file-abc/content" {
		t.Errorf("redirect Location %q; want the relay's own path", loc)
	}
	f.assertStillServes("echoing upstreams")
}
