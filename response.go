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

// respond copies an answer the client is to see, then settles the
// reservation on the usage it reported. Streams are flushed after every read,
// so that each event leaves as soon as it arrived.
func (pr *proxyRequest) respond(w http.ResponseWriter, resp *http.Response, key *poolKey, success bool) {
	defer resp.Body.Close()
	scrubHeader(resp.Header, key.secret, key.upstream.base)
	if success && strings.TrimSuffix(pr.api.endpoint, "/") == "models" && len(pr.client.Models) > 0 {
		pr.respondModels(w, resp, key)
		return
	}
	// Lists of stored objects show the client its own (objects.go).
	if success && pr.listsOwnObjects() {
		pr.respondOwnList(w, resp, key)
		return
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
	flush := stream || resp.ContentLength == -1
	var tap *streamTap
	if stream && success {
		tap = newStreamTap(pr.api.endpoint, pr.injectedUsage)
		if tap.rewrites() {
			w.Header().Del("Content-Length")
		}
	}
	w.WriteHeader(resp.StatusCode)
	if pr.rec != nil {
		pr.rec.start(resp)
	}

	rc := http.NewResponseController(w)
	if flush {
		_ = rc.Flush()
	}
	var kept *bytes.Buffer // a non-stream answer, for its usage
	tooLarge := false      // kept overflowed maxUsageBody
	if success && !stream {
		kept = getBuffer()
		defer putBuffer(kept)
	}
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
	clientGone := false
	firstEvent := tap != nil
	scrub := newScrubber(key.secret)
	// A client that stops reading must not hold the key's concurrency slot
	// and the upstream connection for ever: a write that waits longer than
	// clientWriteTimeout fails, and the copy ends as for a client gone. The
	// deadline is moved at most once a second, and lifted at the end, for
	// the connection's next request.
	var deadlineSet time.Time
	defer func() {
		if !deadlineSet.IsZero() {
			_ = rc.SetWriteDeadline(time.Time{})
		}
	}()
	var bodyErr error
	for {
		n, err := resp.Body.Read(buf)
		chunk := buf[:n]
		if scrub != nil {
			// At the end of the body, what the scrubber held goes too.
			chunk = scrub.feed(chunk, err != nil)
		}
		if len(chunk) > 0 {
			if pr.rec != nil {
				pr.rec.write(chunk)
			}
			if tap != nil {
				chunk = tap.feed(chunk)
			} else if kept != nil && !tooLarge {
				if kept.Len()+len(chunk) > maxUsageBody {
					// Too large to keep whole: usage read from a spliced
					// answer would be wrong, so the estimate stands.
					tooLarge = true
				} else {
					kept.Write(chunk)
				}
			}
			if len(chunk) > 0 && !clientGone {
				if now := time.Now(); now.Sub(deadlineSet) > time.Second {
					if rc.SetWriteDeadline(now.Add(time.Duration(clientWriteTimeout.Load()))) == nil {
						deadlineSet = now
					}
				}
				if _, werr := w.Write(chunk); werr != nil {
					clientGone = true
				} else if flush {
					_ = rc.Flush()
				}
				if firstEvent {
					firstEvent = false
					timeToFirstToken.WithLabelValues(key.upstream.Name).Observe(time.Since(pr.sentAt).Seconds())
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				bodyErr = err
			}
			break
		}
		// A client that left stops the upstream body (the deferred Close
		// cancels it), unless identical requests are following this one.
		if clientGone && (pr.rec == nil || pr.rec.flight.Followers() == 0) {
			bodyErr = errClientGone
			break
		}
	}
	if pr.rec != nil {
		pr.rec.finish(context.WithoutCancel(pr.req.Context()), resp, bodyErr == nil, bodyErr)
	}
	if tap != nil && !clientGone {
		if rest := tap.close(); len(rest) > 0 {
			_, _ = w.Write(rest)
			_ = rc.Flush()
		}
	}
	if tooLarge {
		kept = nil
	}
	pr.settle(key, success, tap, kept)
	if bodyErr != nil && !clientGone {
		// The upstream's body was cut: end the client's answer as an abort,
		// as reverse_proxy does, so that it cannot pass for a whole one.
		_ = rc.Flush()
		panic(http.ErrAbortHandler)
	}
}

// respondModels answers GET /v1/models for a client limited to some models
// with the upstream's list less the models the client may not use.
func (pr *proxyRequest) respondModels(w http.ResponseWriter, resp *http.Response, key *poolKey) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUsageBody+1))
	body = scrub(body, key.secret)
	pr.release(key, true, 0)
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

// settle replaces the reservation's estimate by what the answer reported.
func (pr *proxyRequest) settle(key *poolKey, success bool, tap *streamTap, kept *bytes.Buffer) {
	if !success {
		pr.release(key, true, 0)
		return
	}
	var u usage
	var ok bool
	switch {
	case tap != nil:
		if u, ok = tap.usage(); !ok {
			// An aborted stream settles on what was seen: the prompt, and
			// about a token an event (OpenAI streams a token a chunk).
			u, ok = usage{prompt: pr.promptEst, completion: int64(tap.events)}, true
			u.total = u.prompt + u.completion
		}
	case kept != nil:
		u, ok = usageOf(kept.Bytes())
	}
	var answer []byte
	if kept != nil {
		answer = kept.Bytes()
	}
	pr.rememberResponse(key, answer, tap)
	if !ok {
		// No usage reported (an endpoint without it, an answer too large to
		// keep): the estimate stands.
		pr.release(key, true, pr.cost)
		return
	}
	// The upstream admitted the request at its prompt plus its own max
	// tokens and does not give back what went unused: neither does the
	// relay, or it would believe in room the upstream does not have.
	pr.release(key, true, max(u.total, pr.promptEst+pr.api.maxOut))
	pr.spend(u)
	key.state.tokensIn.Add(u.prompt)
	key.state.tokensOut.Add(u.completion)
	tokensTotal.WithLabelValues(key.upstream.Name, key.id, "prompt").Add(float64(u.prompt))
	tokensTotal.WithLabelValues(key.upstream.Name, key.id, "completion").Add(float64(u.completion))
	if u.cached > 0 {
		tokensTotal.WithLabelValues(key.upstream.Name, key.id, "cached").Add(float64(u.cached))
	}
	pr.repl.Set(phPromptTokens, strconv.FormatInt(u.prompt, 10))
	pr.repl.Set(phCompletionTokens, strconv.FormatInt(u.completion, 10))
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
