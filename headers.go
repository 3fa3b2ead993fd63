package openairelay

import (
	"net/http"
	"slices"
	"strings"
)

// hopHeaders are the hop-by-hop fields (RFC 9110 §7.6.1, and those
// reverse_proxy drops): they describe one connection, and are dropped both
// ways, with Connection and the fields it names.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// droppedRequestHeaders never reach an upstream, besides hopHeaders: the
// client's own credentials and OpenAI account selectors (the key decides
// the account), the relay's own controls, cookies of the site the relay may
// share, and Accept-Encoding, left to the transport so that it can read
// usage from a body it decompresses itself.
var droppedRequestHeaders = []string{
	"Authorization", "Api-Key", "Openai-Organization", "Openai-Project",
	"X-Relay-Priority", "Cookie", "Accept-Encoding", "Content-Length", "Host",
}

// outboundHeader is the header of the request to an upstream: the client's,
// less hopHeaders and droppedRequestHeaders.
func outboundHeader(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for k, v := range in {
		out[k] = v
	}
	removeConnectionHeaders(out)
	for _, h := range hopHeaders {
		delete(out, h)
	}
	for _, h := range droppedRequestHeaders {
		delete(out, h)
	}
	return out
}

// removeConnectionHeaders removes the fields named in Connection, and
// Connection itself.
func removeConnectionHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	delete(h, "Connection")
}

// droppedResponseHeaders are upstream response fields a client of the relay
// must not see, besides hopHeaders: the upstream account's identifiers,
// cookies and alternative services of the upstream's domain, and its server
// name (Caddy sets its own). The upstream key's x-ratelimit-* are dropped
// too: clients get their own.
var droppedResponseHeaders = []string{
	"Openai-Organization", "Openai-Project", "Set-Cookie", "Alt-Svc", "Server",
}

// copyResponseHeader copies the upstream's answer header to the client's,
// less hopHeaders, the fields Connection names, droppedResponseHeaders and
// X-Ratelimit-*.
func copyResponseHeader(dst, src http.Header) {
	connection := src["Connection"]
	for k, v := range src {
		if strings.HasPrefix(k, "X-Ratelimit-") || slices.Contains(hopHeaders, k) ||
			slices.Contains(droppedResponseHeaders, k) || namedIn(connection, k) {
			continue
		}
		dst[k] = v
	}
}

// namedIn reports whether field is listed in the Connection header values.
func namedIn(connection []string, field string) bool {
	for _, v := range connection {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), field) {
				return true
			}
		}
	}
	return false
}
