// Bad input, the model: names the relay must refuse, models smuggled past
// the allow-list (nested, duplicated, in a multipart part, in the path or a
// header), dot segments in paths, and a model list that fails closed.

package openairelay_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

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
