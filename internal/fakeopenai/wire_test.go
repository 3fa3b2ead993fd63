package fakeopenai

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// rawClient does not ask for gzip nor decompress, so tests see the bytes.
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// rawRequest is request without the transport's transparent gzip.
func rawRequest(t *testing.T, s *Server, method, path, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return requestWith(t, rawClient, s, method, path, key, body, hdr...)
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v: %q", err, b)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("bad gzip: %v", err)
	}
	return out
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"br"}, false},
		{[]string{"identity"}, false},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.0"}, false},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip;q=1"}, true},
		{[]string{"gzip;q=abc"}, false},
		{[]string{"gzip;q=2"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"br, *;q=0.5"}, true},
		{[]string{"gzip;q=0, *"}, false}, // gzip named: its own q decides
		{[]string{"*;q=0, gzip"}, true},
		{[]string{"deflate", "gzip"}, true}, // several fields
		{[]string{" , gzip ;q=0.5 "}, true},
	} {
		if got := acceptsGzip(tc.in); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCompressionAndChunking(t *testing.T) {
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	stream := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name       string
		opts       Options
		method     string
		path, body string
		key        string
		ae         string // Accept-Encoding sent ("" = none)
		status     int
		gzip       bool // Content-Encoding: gzip
		vary       bool
		length     bool // Content-Length, not chunked
		wantInBody string
	}{
		{"json gzip", Options{}, "POST", "/chat/completions", chat, testKey, "gzip", 200, true, true, false, `"chat.completion"`},
		{"json no accept-encoding", Options{}, "POST", "/chat/completions", chat, testKey, "", 200, false, true, false, `"chat.completion"`},
		{"json gzip refused", Options{}, "POST", "/chat/completions", chat, testKey, "gzip;q=0, br", 200, false, true, false, `"chat.completion"`},
		{"json star", Options{}, "POST", "/chat/completions", chat, testKey, "*", 200, true, true, false, `"chat.completion"`},
		{"error gzip", Options{}, "POST", "/chat/completions", chat, "", "gzip", 401, true, true, false, `You didn't provide an API key`},
		{"404 gzip", Options{}, "GET", "/nope", "", testKey, "gzip", 404, true, true, false, `Invalid URL`},
		{"models gzip", Options{}, "GET", "/models", "", testKey, "gzip, deflate", 200, true, true, false, `"list"`},
		{"stream never gzip", Options{}, "POST", "/chat/completions", stream, testKey, "gzip", 200, false, false, false, `data: [DONE]`},
		{"NoCompression", Options{NoCompression: true}, "POST", "/chat/completions", chat, testKey, "gzip", 200, false, false, false, `"chat.completion"`},
		{"ContentLength", Options{ContentLength: true}, "POST", "/chat/completions", chat, testKey, "", 200, false, true, true, `"chat.completion"`},
		{"ContentLength gzip", Options{ContentLength: true}, "POST", "/chat/completions", chat, testKey, "gzip", 200, true, true, true, `"chat.completion"`},
		{"ContentLength error", Options{ContentLength: true}, "POST", "/chat/completions", chat, "", "", 401, false, true, true, `API key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.opts)
			var hdr []string
			if tc.ae != "" {
				hdr = []string{"Accept-Encoding", tc.ae}
			}
			resp, b := rawRequest(t, s, tc.method, tc.path, tc.key, tc.body, hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tc.status, b)
			}
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
				t.Errorf("Content-Encoding %q, want gzip %v", resp.Header.Get("Content-Encoding"), tc.gzip)
			}
			if got := resp.Header.Get("Vary") == "Accept-Encoding"; got != tc.vary {
				t.Errorf("Vary %q, want %v", resp.Header.Get("Vary"), tc.vary)
			}
			chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
			if tc.length {
				if chunked || resp.ContentLength != int64(len(b)) || resp.Header.Get("Content-Length") == "" {
					t.Errorf("want Content-Length %d, got %d (TE %v)", len(b), resp.ContentLength, resp.TransferEncoding)
				}
			} else if !chunked || resp.ContentLength != -1 {
				t.Errorf("want chunked without length, got TE %v length %d", resp.TransferEncoding, resp.ContentLength)
			}
			plain := b
			if tc.gzip {
				plain = gunzip(t, b)
			}
			if !strings.Contains(string(plain), tc.wantInBody) {
				t.Errorf("body %q lacks %q", plain, tc.wantInBody)
			}
		})
	}
}

// The SDK path: Go's transport asks for gzip itself and undoes it.
func TestCompressionTransparent(t *testing.T) {
	s := newServer(t, Options{})
	resp, b := request(t, s, "POST", "/chat/completions", testKey, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	if !resp.Uncompressed || decode[oaChatCompletion](t, b).Object != "chat.completion" {
		t.Errorf("uncompressed %v body %q", resp.Uncompressed, b)
	}
}

func TestCompressionHandler(t *testing.T) {
	// Through NewHandler (no listener) the body is gzip too, and the header
	// flushed before it.
	s := NewHandler(Options{AllowAnyKey: true})
	w := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/models", nil)
	req.Header.Set("Authorization", "Bearer sk-x")
	req.Header.Set("Accept-Encoding", "gzip")
	s.ServeHTTP(w, req)
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" || !w.Flushed || w.Header().Get("Content-Length") != "" {
		t.Fatalf("code %d header %v flushed %v", w.Code, w.Header(), w.Flushed)
	}
	if !strings.Contains(string(gunzip(t, w.Body.Bytes())), `"object":"list"`) {
		t.Errorf("body")
	}
}
