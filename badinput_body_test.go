// Bad input, the body: malformed JSON, the wrong Content-Type, bodies over
// max_body_size (announced, chunked or lying), and header blocks too large.
// The fixture and the rules all of them follow are in badinput_test.go.

package openairelay_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

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

// sizedBody is a valid chat request of exactly n bytes (padded with spaces).
func sizedBody(t *testing.T, n int) []byte {
	base := validBody("size probe")
	if n < len(base) {
		t.Fatalf("a body of %d bytes cannot hold a request", n)
	}
	return append([]byte("{"+strings.Repeat(" ", n-len(base))), base[1:]...)
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
