package openairelay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// clientWriteTimeout is how long a write to the client may wait for it to
// read (see respond), in ns: two minutes, but in tests.
var clientWriteTimeout atomic.Int64

func init() { clientWriteTimeout.Store(int64(2 * time.Minute)) }

// maxUsageBody bounds how much of a non-stream answer is kept to read its
// usage: answers with usage are small; a larger one settles on the estimate.
const maxUsageBody = 4 << 20

// answerSink receives a copy of an answer as the upstream sent it (before
// the usage tap): the leader's flight recorder of the cache (cache.go),
// which shares it with identical requests and stores it.
type answerSink interface {
	io.Writer
	start(resp *http.Response)
	// end ends the copy: whole when bodyErr is nil.
	end(ctx context.Context, resp *http.Response, bodyErr error)
	// following reports whether identical requests wait for the answer.
	following() bool
}

// answer is what respond saw of an answer, for finish to settle on.
type answer struct {
	success bool
	// free is set when the request is settled already, on no tokens (a
	// list the relay filtered).
	free bool
	tap  *streamTap // a stream's tap
	body []byte     // a non-stream answer kept whole (nil: too large)
	kept *bytes.Buffer
	// cut is set when the upstream's body ended early with the client still
	// there: its answer is ended as an abort once settled.
	cut bool
}

// respond copies an answer the client is to see, and returns what finish
// settles on. Streams are flushed after every read, so that each event
// leaves as soon as it arrived.
func (pr *proxyRequest) respond(w http.ResponseWriter, resp *http.Response, h *hold, success bool) answer {
	defer resp.Body.Close()
	key := h.key
	scrubHeader(resp.Header, key.secret, key.upstream.base)
	if success && strings.TrimSuffix(pr.api.endpoint, "/") == "models" && len(pr.client.Models) > 0 {
		pr.respondModels(w, resp, h)
		return answer{success: true, free: true}
	}
	// Lists of stored objects show the client its own (objects.go).
	if success && pr.listsOwnObjects() {
		pr.respondOwnList(w, resp, h)
		return answer{success: true, free: true}
	}
	copyResponseHeader(w.Header(), resp.Header)
	if cl := pr.client.limiter; cl != nil {
		setClientRateLimitHeaders(w.Header(), cl, time.Now())
	}
	// Whether an answer is a stream comes from its Content-Type alone: JSON
	// answers arrive compressed, chunked or over HTTP/2 without a length
	// too, and their usage must still be read. Bodies of unknown length are
	// flushed as they arrive all the same, as reverse_proxy does.
	stream := isEventStream(resp)
	a := answer{success: success}
	if stream && success {
		a.tap = newStreamTap(pr.api.endpoint, pr.injectedUsage)
		if a.tap.rewrites() {
			w.Header().Del("Content-Length")
		}
	}
	w.WriteHeader(resp.StatusCode)
	if pr.sink != nil {
		pr.sink.start(resp)
	}
	var out clientWriter
	out.init(w, stream || resp.ContentLength == -1)
	defer out.close()
	if a.tap != nil {
		out.firstFrom, out.sentAt = key.upstream.Name, pr.sentAt
	}
	var kept keeper // a non-stream answer, for its usage
	if success && !stream {
		kept.buf = getBuffer()
		a.kept = kept.buf // back to its pool once finished
	}
	bodyErr := pr.copyBody(&out, resp.Body, key.secret, stream, a.tap, &kept)
	if pr.sink != nil {
		pr.sink.end(context.WithoutCancel(pr.req.Context()), resp, bodyErr)
	}
	if a.tap != nil && !out.gone {
		if rest := a.tap.close(); len(rest) > 0 {
			_, _ = out.Write(rest)
		}
	}
	if kept.buf != nil && !kept.overflowed {
		a.body = kept.buf.Bytes()
	}
	if bodyErr != nil && !out.gone {
		_ = out.rc.Flush()
		a.cut = true
	}
	return a
}

// copyBody copies the upstream's body to the client: each read scrubbed of
// the key, copied to the sink, through the tap (a stream) or the keeper (an
// answer), then written. It returns why the body ended early, if it did.
func (pr *proxyRequest) copyBody(out *clientWriter, body io.Reader, secret string, stream bool, tap *streamTap, kept *keeper) error {
	// A stream holds its buffer for as long as it is open, mostly waiting:
	// events are small, so streams get a small buffer and many open
	// streams cost little memory.
	pool := &copyBufferPool
	if stream {
		pool = &streamBufferPool
	}
	bufp := pool.Get().(*[]byte)
	defer pool.Put(bufp)
	buf := *bufp
	scrub := newScrubber(secret)
	for {
		n, err := body.Read(buf)
		chunk := buf[:n]
		if scrub != nil {
			// At the end of the body, what the scrubber held goes too.
			chunk = scrub.feed(chunk, err != nil)
		}
		if len(chunk) > 0 {
			if pr.sink != nil {
				_, _ = pr.sink.Write(chunk)
			}
			if tap != nil {
				chunk = tap.feed(chunk)
			} else if kept.buf != nil {
				kept.keep(chunk)
			}
			_, _ = out.Write(chunk)
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		// A client that left stops the upstream body (the caller's Close
		// cancels it), unless identical requests are following this one.
		if out.gone && (pr.sink == nil || !pr.sink.following()) {
			return errClientGone
		}
	}
}

// keeper keeps a non-stream answer for its usage, up to maxUsageBody (none
// when buf is nil).
type keeper struct {
	buf        *bytes.Buffer
	overflowed bool
}

func (k *keeper) keep(p []byte) {
	if k.overflowed {
		return
	}
	if k.buf.Len()+len(p) > maxUsageBody {
		// Too large to keep whole: usage read from a spliced answer would
		// be wrong, so the estimate stands.
		k.overflowed = true
		return
	}
	k.buf.Write(p)
}

// clientWriter writes to the client: flushed after each write when the
// answer streams, and bounded in time. A client that stops reading must not
// hold the key's concurrency slot and the upstream connection for ever: a
// write that waits longer than clientWriteTimeout fails, and the client
// counts as gone. The deadline is moved at most once a second, and lifted
// by close, for the connection's next request. Writes after the client is
// gone are dropped.
type clientWriter struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	flush       bool
	deadlineSet time.Time
	gone        bool
	// firstFrom, when set, is the upstream whose time to first token the
	// first write observes, counted from sentAt.
	firstFrom string
	sentAt    time.Time
}

func (cw *clientWriter) init(w http.ResponseWriter, flush bool) {
	cw.w, cw.rc, cw.flush = w, http.NewResponseController(w), flush
	if flush {
		_ = cw.rc.Flush()
	}
}

func (cw *clientWriter) Write(p []byte) (int, error) {
	if cw.gone || len(p) == 0 {
		return len(p), nil
	}
	if now := time.Now(); now.Sub(cw.deadlineSet) > time.Second {
		if cw.rc.SetWriteDeadline(now.Add(time.Duration(clientWriteTimeout.Load()))) == nil {
			cw.deadlineSet = now
		}
	}
	if _, err := cw.w.Write(p); err != nil {
		cw.gone = true
	} else if cw.flush {
		_ = cw.rc.Flush()
	}
	if cw.firstFrom != "" {
		timeToFirstToken.WithLabelValues(cw.firstFrom).Observe(time.Since(cw.sentAt).Seconds())
		cw.firstFrom = ""
	}
	return len(p), nil
}

func (cw *clientWriter) close() {
	if !cw.deadlineSet.IsZero() {
		_ = cw.rc.SetWriteDeadline(time.Time{})
	}
}

// respondModels answers GET /v1/models for a client limited to some models
// with the upstream's list less the models the client may not use.
func (pr *proxyRequest) respondModels(w http.ResponseWriter, resp *http.Response, h *hold) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUsageBody+1))
	body = scrub(body, h.key.secret)
	h.settle(0)
	var list struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}
	// A list the relay cannot read whole is not passed on unfiltered: the
	// client would see models it may not use.
	if err != nil || len(body) > maxUsageBody || json.Unmarshal(body, &list) != nil || list.Data == nil {
		errUpstream(http.StatusBadGateway, "The upstream's model list could not be read.").write(w)
		return
	}
	kept := list.Data[:0]
	for _, m := range list.Data {
		var model struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &model) == nil && model.ID != "" && pr.client.allowsModel(model.ID) {
			kept = append(kept, m)
		}
	}
	list.Data = kept
	if body, err = json.Marshal(list); err != nil {
		errUpstream(http.StatusBadGateway, "The upstream's model list could not be read.").write(w)
		return
	}
	copyResponseHeader(w.Header(), resp.Header)
	w.Header().Del("Content-Length")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

func isEventStream(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

// errClientGone ends a flight whose leader's client left with no one
// following.
var errClientGone = errors.New("the client left")

var copyBufferPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

var streamBufferPool = sync.Pool{New: func() any {
	b := make([]byte, 4<<10)
	return &b
}}
