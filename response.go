package openairelay

import (
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// droppedResponseHeaders are upstream response fields a client of the relay
// must not see: per-key limits (clients get their own), the upstream
// account's identifiers, cookies and alternative services of the upstream's
// domain, and its server name (Caddy sets its own).
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

// writeResponse copies a response the client is to see, flushing after every
// read for streams so that each event leaves as soon as it arrived.
func (pr *proxyRequest) writeResponse(w http.ResponseWriter, resp *http.Response, key *poolKey) {
	defer resp.Body.Close()
	copyResponseHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)

	flush := streamed(resp)
	rc := http.NewResponseController(w)
	if flush {
		_ = rc.Flush()
	}
	bufp := copyBufferPool.Get().(*[]byte)
	defer copyBufferPool.Put(bufp)
	buf := *bufp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client left; the deferred Close cancels the upstream body
			}
			if flush {
				_ = rc.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// streamed applies reverse_proxy's rule for flushing at once: server-sent
// events, and any body of unknown length.
func streamed(resp *http.Response) bool {
	if resp.ContentLength == -1 {
		return true
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

var copyBufferPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}
