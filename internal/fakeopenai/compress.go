package fakeopenai

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// acceptsGzip reports whether Accept-Encoding field values accept gzip
// (RFC 9110 §12.5.3): an explicit gzip (or x-gzip) with q > 0, or, when gzip
// is not named, "*" with q > 0. "gzip;q=0" refuses it; an unparsable q counts
// as 0.
func acceptsGzip(values []string) bool {
	gzipQ, starQ := -1.0, -1.0
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(item, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding == "" {
				continue
			}
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				name, val, ok := strings.Cut(p, "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
					continue
				}
				f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0
				}
				q = f
			}
			switch coding {
			case "gzip", "x-gzip":
				gzipQ = max(gzipQ, q)
			case "*":
				starQ = max(starQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}

// compressible: JSON and text answers are compressed; event streams and
// binary file contents are not.
func compressible(ct []string) bool {
	if len(ct) == 0 {
		return false
	}
	t := ct[0]
	return strings.HasPrefix(t, "application/json") ||
		(strings.HasPrefix(t, "text/") && !strings.HasPrefix(t, "text/event-stream"))
}

var gzipPool = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzipPool.Get().(*gzip.Writer)
	zw.Reset(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	gzipPool.Put(zw)
	return buf.Bytes()
}

// writeBody writes a whole (non-stream) answer as api.openai.com does: gzip
// when the client accepts it (Vary: Accept-Encoding on every compressible
// answer), chunked without Content-Length (the header is flushed before the
// body, so net/http cannot compute a length even for a small body).
// Options.NoCompression and Options.ContentLength turn these off.
func (c *call) writeBody(status int, ct []string, body []byte) {
	h := c.w.Header()
	if !c.s.opts.NoCompression && compressible(ct) {
		h[hVary] = varyAE
		if acceptsGzip(c.r.Header.Values("Accept-Encoding")) {
			body = gzipBytes(body)
			h[hCE] = gzipEnc
		}
	}
	if c.s.opts.ContentLength {
		h[hCL] = []string{strconv.Itoa(len(body))}
		c.writeHeader(status, ct)
	} else {
		delete(h, hCL)
		c.writeHeader(status, ct)
		_ = http.NewResponseController(c.w).Flush()
	}
	_, _ = c.w.Write(body)
}
