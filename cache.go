package openairelay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyrelay/openairelay/internal/cache"
)

// Cache results, in X-Relay-Cache and the cache placeholder.
const (
	cacheHit       = "HIT"
	cacheMiss      = "MISS"
	cacheBypass    = "BYPASS"
	cacheCoalesced = "COALESCED"
)

// fromCache answers the request from the cache when it can: from the
// store (an identical request's answer), from the semantic index (a similar
// one's), or as a follower of an identical request in flight. It reports
// whether the request was answered. When it was not and the answer may be
// cached, the request leads a flight: pr.sink shares its answer with the
// requests that fold into it and stores it.
func (pr *proxyRequest) fromCache(w http.ResponseWriter) bool {
	cl, result := pr.rl.cacheFor(pr.client, pr.api, pr.req)
	if result == cacheBypass {
		pr.markCache(w.Header(), cacheBypass)
	}
	if cl == nil {
		return false
	}
	if pr.serveCached(w, cl) {
		return true
	}
	if cl.c.Semantic != nil && pr.serveSemantic(w, cl) {
		return true
	}
	if pr.joinFlight(w, cl) {
		return true
	}
	pr.markCache(w.Header(), cacheMiss)
	return false
}

// joinFlight folds the request into an identical one in flight, or makes it
// the one others fold into. It reports whether the request was answered (as
// a follower); otherwise it leads the flight and calls the upstream itself.
func (pr *proxyRequest) joinFlight(w http.ResponseWriter, cl *cacheLookup) bool {
	for {
		f, leader := cl.c.group.Join(cl.key)
		if leader {
			claimed, answered := pr.joinRemoteFlight(w, cl)
			if answered {
				f.Abandon() // the followers here find the answer in the store
				return true
			}
			// The flight buffers no more than the store would keep.
			f.SetLimit(int(min(cl.c.MaxEntry, math.MaxInt32)))
			pr.sink = &recorder{cl: cl, flight: f, claimed: claimed}
			return false
		}
		if pr.follow(w, f, cl) {
			return true
		}
		// The leader gave up before answering: join again; one of the
		// waiters becomes the new leader. An answer stored meanwhile is
		// served from the store.
		if pr.serveCached(w, cl) {
			return true
		}
	}
}

// joinRemoteFlight, for a store shared by several instances, claims the
// request's flight for this instance, or waits for the instance that
// claimed it and answers from what it stores. It reports whether this
// instance claimed it (the recorder then ends the claim) and whether the
// request was answered.
func (pr *proxyRequest) joinRemoteFlight(w http.ResponseWriter, cl *cacheLookup) (claimed, answered bool) {
	rf, ok := cl.c.store.(remoteFlights)
	if !ok || cl.control.noCache {
		return false, false
	}
	ctx := pr.req.Context()
	claimed, err := rf.Claim(ctx, cl.key, remoteFlightTTL)
	if err != nil || claimed {
		return claimed, false
	}
	if e, ok := rf.Wait(ctx, cl.key); ok && pr.serveEntry(w, cl, e) {
		return false, true
	}
	// The other instance gave up, or its answer does not suit this
	// request: send it.
	claimed, _ = rf.Claim(ctx, cl.key, remoteFlightTTL)
	return claimed, false
}

// leaveFlight lets the requests folded into this one go their own way if it
// ends without an answer to share.
func (pr *proxyRequest) leaveFlight() {
	if rec, ok := pr.sink.(*recorder); ok {
		rec.abandon()
	}
}

// cacheControl is what a request's Cache-Control asks of the cache.
type cacheControl struct {
	noStore, noCache bool
	maxAge           time.Duration // -1: any age
}

func parseCacheControl(h http.Header) cacheControl {
	cc := cacheControl{maxAge: -1}
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store":
				cc.noStore = true
			case "no-cache":
				cc.noCache = true
			case "max-age":
				if n, err := strconv.Atoi(strings.Trim(value, `"`)); err == nil && n >= 0 {
					cc.maxAge = time.Duration(n) * time.Second
				}
			}
		}
	}
	return cc
}

// cacheLookup is a request's dealings with the cache.
type cacheLookup struct {
	c        *CacheConfig
	key      cache.Key
	endpoint cache.Endpoint
	control  cacheControl

	// For semantic mode: the request's group and the embedding of its last
	// user message, to index its answer under once stored.
	semGroup cache.Key
	vector   []float32
}

// cacheFor decides whether a request goes through the cache, and computes
// its identity. It returns nil when the cache is off; a lookup whose result
// is BYPASS when the request may not be cached.
func (rl *Relay) cacheFor(client *Client, ar *apiRequest, r *http.Request) (*cacheLookup, string) {
	c := rl.Cache
	if c == nil {
		return nil, ""
	}
	cl := &cacheLookup{c: c, control: parseCacheControl(r.Header), endpoint: cache.EndpointOf(ar.endpoint)}
	if r.Method != http.MethodPost || ar.kind != bodyJSON || cl.control.noStore || !slices.Contains(c.Paths, ar.endpoint) {
		return nil, cacheBypass
	}
	// Clients are known by their stable id (see Relay.ownerOf): two sites'
	// clients of the same name are not one client.
	scope := ""
	if c.Scope == "client" {
		scope = rl.ownerOf(client)
	}
	path := ar.endpoint
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	key, ok, err := cache.Identity(scope, r.Method, path, ar.model, ar.body, &c.identity)
	if err != nil || !ok {
		return nil, cacheBypass
	}
	cl.key = key
	return cl, ""
}

// serveCached answers the request from the store if it can, in the form the
// client asked for (a stored stream serves a non-stream request and the
// reverse). It reports whether it answered.
func (pr *proxyRequest) serveCached(w http.ResponseWriter, cl *cacheLookup) bool {
	if cl.control.noCache {
		return false
	}
	e, ok := cl.c.store.Get(pr.req.Context(), cl.key)
	if !ok {
		return false
	}
	return pr.serveEntry(w, cl, e)
}

// serveEntry answers from a stored entry, if its age and form suit the
// request.
func (pr *proxyRequest) serveEntry(w http.ResponseWriter, cl *cacheLookup, e *cache.Entry) bool {
	age := e.Age(time.Now())
	if cl.control.maxAge >= 0 && age > cl.control.maxAge {
		return false
	}
	body, stream, ok := pr.convert(e.Body, e.Stream, cl.endpoint)
	if !ok {
		return false
	}
	if !pr.countCachedRequest(w) {
		return true
	}
	h := w.Header()
	for k, v := range e.Header {
		h[k] = v
	}
	pr.setCacheHeaders(h, stream, cacheHit)
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	w.WriteHeader(e.Status)
	pr.writeStored(w, body, stream)
	return true
}

// convert turns a stored answer into the form the request wants: the same
// form as it is (a stream through the usage filter), or a stream made from
// an answer and the reverse.
func (pr *proxyRequest) convert(body []byte, isStream bool, ep cache.Endpoint) ([]byte, bool, bool) {
	want := pr.api.stream
	var err error
	switch {
	case isStream == want:
		return body, isStream, true
	case want:
		body, err = cache.ToSSE(ep, body, pr.api.wantsUsage)
	default:
		body, err = cache.FromSSE(ep, body)
	}
	return body, want, err == nil
}

// writeStored writes a stored (or assembled) answer, taking out of a stream
// the usage its client did not ask for.
func (pr *proxyRequest) writeStored(w http.ResponseWriter, body []byte, stream bool) {
	if stream && pr.api.needsUsageOption() {
		tap := newStreamTap(pr.api.endpoint, true)
		body = append(tap.feed(body), tap.close()...)
	}
	_, _ = w.Write(body)
}

// countCachedRequest counts a request served without an upstream call
// against the client's request limits. It answers 429 and returns false
// when the client has no room.
func (pr *proxyRequest) countCachedRequest(w http.ResponseWriter) bool {
	l := pr.client.limiter
	if l == nil {
		return true
	}
	now := time.Now()
	r, ok := pr.rl.state.reserve(now, 0, nil, l)
	if !ok && pr.rl.state.unavailable() {
		errStateUnavailable().write(w)
		return false
	}
	if !ok {
		wait := time.Second
		if at, _ := l.Check(now, 0); !at.IsZero() {
			wait = max(time.Until(at), time.Second)
		}
		errNoCapacity(wait, "this client's own rate limit is reached.").write(w)
		return false
	}
	pr.rl.state.settle(&r, now, 0)
	setClientRateLimitHeaders(w.Header(), l, now)
	return true
}

// markCache records a request's cache result: in X-Relay-Cache, the cache
// placeholder and the cache metric.
func (pr *proxyRequest) markCache(h http.Header, result string) {
	h.Set("X-Relay-Cache", result)
	pr.repl.Set(phCache, result)
	cacheResults.WithLabelValues(result).Inc()
}

// setCacheHeaders sets the headers of an answer the cache serves.
func (pr *proxyRequest) setCacheHeaders(h http.Header, stream bool, result string) {
	pr.markCache(h, result)
	h.Del("Content-Length")
	if stream {
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
	} else if !strings.Contains(h.Get("Content-Type"), "json") {
		h.Set("Content-Type", "application/json")
		h.Del("Cache-Control")
	}
}

// follow serves a request folded into an identical one in flight. It
// reports done when nothing is left to do (the answer was written, or the
// client left), and false when the leader gave up before answering: the
// caller then joins again, and one of the waiters becomes the new leader.
func (pr *proxyRequest) follow(w http.ResponseWriter, f *cache.Flight, cl *cacheLookup) (done bool) {
	ctx := pr.req.Context()
	fl, err := f.Follow(ctx)
	if err != nil {
		return errors.Is(err, context.Canceled) || ctx.Err() != nil // the client left: nothing to serve
	}
	defer fl.Close()
	leaderStream := strings.HasPrefix(fl.Header().Get("Content-Type"), "text/event-stream")
	if leaderStream != pr.api.stream || fl.Status() < 200 || fl.Status() >= 300 {
		// Another form than the leader's (or an error answer): wait for the
		// whole answer and convert it.
		var all []byte
		for {
			p, err := fl.Next(ctx)
			all = append(all, p...)
			if err != nil {
				if ctx.Err() != nil {
					return true
				}
				if !isEOF(err) {
					return false
				}
				break
			}
		}
		body, stream, ok := all, leaderStream, true
		if fl.Status() >= 200 && fl.Status() < 300 {
			body, stream, ok = pr.convert(all, leaderStream, cl.endpoint)
		}
		if !ok {
			return false
		}
		if pr.startCoalesced(w, fl, stream) {
			pr.writeStored(w, body, stream)
		}
		return true
	}
	if !pr.startCoalesced(w, fl, leaderStream) {
		return true
	}
	rc := http.NewResponseController(w)
	var tap *streamTap
	if leaderStream {
		_ = rc.Flush()
		if pr.api.needsUsageOption() {
			tap = newStreamTap(pr.api.endpoint, true)
		}
	}
	for {
		p, err := fl.Next(ctx)
		if tap != nil {
			p = tap.feed(p)
		}
		if len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				return true
			}
			if leaderStream {
				_ = rc.Flush()
			}
		}
		if err != nil {
			if tap != nil && isEOF(err) {
				_, _ = w.Write(tap.close())
			}
			// A leader that lost its upstream mid-body cut this stream too;
			// bytes were sent, so there is nothing else to do.
			return true
		}
	}
}

// startCoalesced counts a coalesced request against the client's limits
// and writes the leader's status and headers. It returns false when the
// client's limits refused it (the 429 is written).
func (pr *proxyRequest) startCoalesced(w http.ResponseWriter, fl *cache.Follower, stream bool) bool {
	if !pr.countCachedRequest(w) {
		return false
	}
	h := w.Header()
	copyResponseHeader(h, fl.Header())
	pr.setCacheHeaders(h, stream, cacheCoalesced)
	w.WriteHeader(fl.Status())
	return true
}

// recorder feeds the leader's upstream answer to the requests folded into
// it, and stores it once complete: the answerSink of a flight's leader.
type recorder struct {
	cl     *cacheLookup
	flight *cache.Flight
	ended  bool
	// claimed is set when the flight is this instance's in a store shared
	// by several: storing the answer ends the claim, and so must its end
	// without one.
	claimed bool

	resp   *http.Response
	stream bool
	stored bool // the answer is in the store
}

var _ answerSink = (*recorder)(nil)

func (rec *recorder) start(resp *http.Response) {
	rec.resp, rec.stream = resp, isEventStream(resp)
	rec.flight.Start(resp.StatusCode, resp.Header.Clone())
}

// Write feeds the flight. A stream is stored as soon as its last event is
// whole, before the relay writes that event to its client: a client that
// stops reading at data: [DONE] and asks again at once finds it stored.
func (rec *recorder) Write(p []byte) (int, error) {
	rec.flight.Write(p)
	if rec.stream && !rec.stored && lastEventEnds(rec.cl.endpoint, rec.flight.Body()) {
		rec.store(context.Background())
	}
	return len(p), nil
}

// lastEventEnds reports whether the stream so far ends with the whole
// event that ends the API's streams: data: [DONE] (chat, completions) or
// response.completed (Responses). Only the last event is looked at: the
// marks may also appear as text inside an answer's content.
func lastEventEnds(endpoint cache.Endpoint, body []byte) bool {
	ev, ok := bytes.CutSuffix(body, []byte("\n\n"))
	if !ok {
		return false
	}
	if i := bytes.LastIndex(ev, []byte("\n\n")); i >= 0 {
		ev = ev[i+2:]
	}
	if endpoint == cache.EndpointResponses {
		return bytes.HasPrefix(ev, []byte("event: response.completed\n"))
	}
	return bytes.Equal(ev, []byte("data: [DONE]")) || bytes.Equal(ev, []byte("data:[DONE]"))
}

func (rec *recorder) following() bool { return rec.flight.Followers() > 0 }

// end ends the flight: a complete 2xx answer is stored first, so that a
// request arriving as the flight ends finds it in the store.
func (rec *recorder) end(ctx context.Context, resp *http.Response, bodyErr error) {
	rec.ended = true
	defer func() {
		if rec.claimed && !rec.stored {
			rec.cl.c.store.(remoteFlights).Release(context.WithoutCancel(ctx), rec.cl.key)
		}
	}()
	if bodyErr != nil {
		rec.flight.FailBody(bodyErr)
		return
	}
	if !rec.stored {
		rec.resp = resp
		rec.store(ctx)
	}
	rec.flight.Finish()
}

// store puts a complete 2xx answer in the store, once.
func (rec *recorder) store(ctx context.Context) {
	resp := rec.resp
	if rec.stored || resp == nil || resp.StatusCode < 200 || resp.StatusCode >= 300 || rec.flight.Overflowed() {
		return
	}
	body := rec.flight.Body()
	stream := isEventStream(resp)
	if int64(len(body)) > rec.cl.c.MaxEntry || (stream && !streamEndedWell(rec.cl.endpoint, body)) {
		return
	}
	rec.cl.c.store.Set(ctx, rec.cl.key, &cache.Entry{
		Status: resp.StatusCode,
		Header: cache.ReplayHeader(resp.Header),
		Body:   body,
		Stream: stream,
		Stored: time.Now(),
	}, time.Duration(rec.cl.c.TTL))
	rec.stored = true
	if rec.cl.vector != nil {
		rec.cl.c.semantic.add(rec.cl.semGroup, rec.cl.key, rec.cl.vector)
	}
}

// Events that end a stream badly: an error event in the middle of a chat
// stream (a data line that is an error object), a Responses stream's error
// or failure. A stream that carried one is not an answer to store, even if
// its connection closed cleanly.
var streamErrorMarks = [][]byte{
	[]byte("data: {\"error\""), []byte("data:{\"error\""), []byte("event: error"),
	[]byte(`"type":"error"`), []byte(`"type":"response.failed"`), []byte(`"type":"response.incomplete"`),
}

// streamEndedWell reports whether a stored stream is a whole answer: no
// error event, and the end the API marks (data: [DONE] for chat and
// completions, response.completed for the Responses API).
func streamEndedWell(endpoint cache.Endpoint, body []byte) bool {
	for _, m := range streamErrorMarks {
		if bytes.Contains(body, m) {
			return false
		}
	}
	if endpoint == cache.EndpointResponses {
		return bytes.Contains(body, []byte(`"type":"response.completed"`))
	}
	return bytes.Contains(body, []byte("[DONE]"))
}

// abandon lets the requests folded into this one go their own way when it
// ends without an upstream answer to share.
func (rec *recorder) abandon() {
	if !rec.ended {
		rec.ended = true
		rec.flight.Abandon()
		if rec.claimed {
			rec.cl.c.store.(remoteFlights).Release(context.Background(), rec.cl.key)
		}
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// cacheStats adds up the statistics of every cache store in use.
func cacheStats() cache.Stats {
	var total cache.Stats
	cacheStores.Range(func(_, v any) bool {
		st := v.(*sharedStore).store.Stats()
		total.Entries += st.Entries
		total.Bytes += st.Bytes
		total.Hits += st.Hits
		total.Misses += st.Misses
		total.Evictions += st.Evictions
		total.Expired += st.Expired
		return true
	})
	return total
}
