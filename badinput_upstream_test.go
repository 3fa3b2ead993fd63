// Bad input from the other side: upstream answers that are not what they
// claim to be, and an upstream that echoes its key back.

package openairelay_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

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
