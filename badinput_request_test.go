// Bad input, the request: client keys in every wrong shape, requests that
// once crashed a handler, and methods and endpoints the relay does not serve.

package openairelay_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"testing"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

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
