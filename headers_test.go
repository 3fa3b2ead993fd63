package openairelay

import (
	"net/http"
	"slices"
	"testing"
)

// TestOutboundHeader checks what of a client's request header reaches an
// upstream.
func TestOutboundHeader(t *testing.T) {
	in := http.Header{
		"Authorization":       {"Bearer client-key"},
		"Api-Key":             {"client-key"},
		"Openai-Organization": {"org-client"},
		"Openai-Project":      {"proj-client"},
		"X-Relay-Priority":    {"low"},
		"Cookie":              {"site=1"},
		"Accept-Encoding":     {"br"},
		"Content-Length":      {"12"},
		"Connection":          {"keep-alive, X-Hop"},
		"X-Hop":               {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Authorization": {"Basic x"},
		"Proxy-Authenticate":  {"Basic"},
		"Te":                  {"trailers"},
		"Upgrade":             {"websocket"},
		"Content-Type":        {"application/json"},
		"Openai-Beta":         {"assistants=v2"},
		"X-Stainless-Lang":    {"python"},
		"Idempotency-Key":     {"abc"},
	}
	out := outboundHeader(in)
	checkOnly(t, out, in, "the upstream", "Content-Type", "Openai-Beta", "X-Stainless-Lang", "Idempotency-Key")
	if in.Get("Authorization") == "" || in.Get("X-Hop") == "" {
		t.Error("outboundHeader changed the client's header")
	}
}

// TestCopyResponseHeader checks what of an upstream's answer header a
// client sees.
func TestCopyResponseHeader(t *testing.T) {
	src := http.Header{
		"Content-Type":                   {"application/json"},
		"Openai-Processing-Ms":           {"120"},
		"X-Request-Id":                   {"req_1"},
		"Openai-Organization":            {"org-upstream"},
		"Openai-Project":                 {"proj-upstream"},
		"Set-Cookie":                     {"__cf_bm=1"},
		"Alt-Svc":                        {"h3=\":443\""},
		"Server":                         {"cloudflare"},
		"X-Ratelimit-Remaining-Requests": {"59"},
		"X-Ratelimit-Limit-Tokens":       {"1000"},
		"Connection":                     {"close, X-Upstream-Hop"},
		"X-Upstream-Hop":                 {"1"},
		"Keep-Alive":                     {"timeout=5"},
		"Proxy-Authenticate":             {"Basic realm=up"},
		"Transfer-Encoding":              {"chunked"},
		"Trailer":                        {"X-Checksum"},
		"Upgrade":                        {"h2c"},
	}
	dst := http.Header{}
	copyResponseHeader(dst, src)
	checkOnly(t, dst, src, "the client", "Content-Type", "Openai-Processing-Ms", "X-Request-Id")
}

// checkOnly checks that got holds the kept fields of src, unchanged, and
// nothing else.
func checkOnly(t *testing.T, got, src http.Header, where string, kept ...string) {
	t.Helper()
	for k := range got {
		if !slices.Contains(kept, k) {
			t.Errorf("%s reached %s", k, where)
		}
	}
	for _, k := range kept {
		if got.Get(k) != src.Get(k) {
			t.Errorf("%s = %q; want %q", k, got.Get(k), src.Get(k))
		}
	}
}
