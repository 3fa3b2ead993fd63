package openairelay

import (
	"net/http"
	"slices"
	"strings"
)

// droppedRequestHeaders never reach an upstream: the client's own
// credentials and OpenAI account selectors (the key decides the account),
// the relay's own controls, cookies of the site the relay may share, and
// Accept-Encoding, left to the transport so that it can read usage from a
// body it decompresses itself.
var droppedRequestHeaders = []string{
	"Authorization", "Api-Key", "Openai-Organization", "Openai-Project",
	"X-Relay-Priority", "Cookie", "Accept-Encoding", "Content-Length", "Host",
	"Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade",
}

func outboundHeader(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for k, v := range in {
		out[k] = v
	}
	removeConnectionHeaders(out)
	for _, h := range droppedRequestHeaders {
		delete(out, h)
	}
	return out
}

// removeConnectionHeaders removes the fields named in Connection, and
// Connection itself (RFC 9110 §7.6.1).
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
// must not see: the upstream account's identifiers, cookies and alternative
// services of the upstream's domain, and its server name (Caddy sets its
// own). The upstream key's x-ratelimit-* are dropped too: clients get their
// own.
var droppedResponseHeaders = []string{
	"Openai-Organization", "Openai-Project", "Set-Cookie", "Alt-Svc", "Server",
	"Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func copyResponseHeader(dst, src http.Header) {
	connection := src["Connection"]
	for k, v := range src {
		if strings.HasPrefix(k, "X-Ratelimit-") || slices.Contains(droppedResponseHeaders, k) ||
			k == "Connection" || namedIn(connection, k) {
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
