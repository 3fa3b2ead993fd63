package openairelay

import (
	"bytes"
	"errors"
	"io"
	"iter"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Placeholder names set on every request.
const (
	phClient   = "http.openai_relay.client"
	phUpstream = "http.openai_relay.upstream"
	phKey      = "http.openai_relay.key"
	phModel    = "http.openai_relay.model"
	phRetries  = "http.openai_relay.retries"
	phQueueMS  = "http.openai_relay.queue_ms"
	phCache    = "http.openai_relay.cache"

	phPromptTokens     = "http.openai_relay.prompt_tokens"
	phCompletionTokens = "http.openai_relay.completion_tokens"
)

// ServeHTTP relays one request. The relay is a terminal handler: it answers
// every request itself and never calls next.
func (rl *Relay) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}

	addr := clientAddress(r)
	if until, blocked := clientAuthGuard.blocked(addr); blocked {
		errAuthThrottled(until).write(w)
		return nil
	}
	client, aerr := rl.authenticate(r)
	if rl.ClientAuth != "none" {
		clientAuthGuard.record(addr, aerr == nil)
	}
	if aerr != nil {
		aerr.write(w)
		return nil
	}
	repl.Set(phClient, client.Name)
	client.state.requests.Add(1)

	// The API takes GET, POST and DELETE: anything else (TRACE, PUT, …)
	// is refused before it can reach an upstream that might echo it.
	if r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodDelete {
		(&apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "Invalid method for URL (" + truncateForMessage(r.Method) + " " + truncateForMessage(r.URL.Path) + ")"}).write(w)
		return nil
	}
	endpoint, ok := apiEndpoint(r.URL.Path)
	if ok && !client.allowsEndpoint(endpoint) {
		(&apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "endpoint_not_allowed",
			Message: "This client may not call " + truncateForMessage(r.URL.Path) + " through this relay."}).write(w)
		return nil
	}
	if !ok {
		(&apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
			Message: "Invalid URL (" + r.Method + " " + truncateForMessage(r.URL.Path) + ")"}).write(w)
		return nil
	}

	buf := getBuffer()
	defer putBuffer(buf)
	ar := &apiRequest{endpoint: endpoint}
	if aerr := rl.readBody(w, r, buf); aerr != nil {
		aerr.write(w)
		return nil
	}
	ar.body = buf.Bytes()
	// Bodies held (in flight and queued) stay within max_buffered.
	held := int64(buf.Cap())
	if rl.buffered.Add(held) > rl.MaxBuffered {
		rl.buffered.Add(-held)
		(&apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "relay_busy", RetryAfter: time.Second,
			Message: "The relay holds as many request bodies as it may: try again shortly."}).write(w)
		return nil
	}
	defer rl.buffered.Add(-held)
	if aerr := ar.parseBody(r.Method, r.Header); aerr != nil {
		aerr.write(w)
		return nil
	}
	// GET /v1/models/{model} (and DELETE, for fine-tuned models) names
	// its model in the path: it is routed and allowed like a body's model,
	// and a body cannot name another.
	if id, ok := strings.CutPrefix(ar.endpoint, "models/"); ok && id != "" {
		if !utf8.ValidString(id) || (ar.model != "" && ar.model != id) || !client.allowsModel(id) {
			errModelNotFound(id).write(w)
			return nil
		}
		ar.model = id
	}
	if aerr := ar.requireModel(r.Method); aerr != nil {
		aerr.write(w)
		return nil
	}
	repl.Set(phModel, ar.model)

	if !client.allowsModel(ar.model) {
		errModelNotAllowed(ar.model).write(w)
		return nil
	}
	route := rl.route(client, ar.model)
	if route.empty() {
		errModelNotFound(ar.model).write(w)
		return nil
	}

	pr := &proxyRequest{
		rl: rl, client: client, req: r, api: ar, route: route, repl: repl,
		priority:      requestPriority(client, r.Header),
		deadline:      time.Now().Add(time.Duration(rl.MaxWait)),
		promptEst:     rl.estimatePrompt(ar),
		injectedUsage: ar.needsUsageOption(),
	}
	pr.cost = pr.promptEst + rl.completionAllowance(ar)

	// Stored objects of other clients are refused before the cache and
	// any upstream call (objects.go), and so are batches of models the
	// client may not use (batches.go).
	if aerr := pr.checkObjects(); aerr != nil {
		aerr.write(w)
		return nil
	}
	if aerr := pr.checkBatch(); aerr != nil {
		aerr.write(w)
		return nil
	}

	cl, result := rl.cacheFor(client, ar, r)
	if result == cacheBypass {
		pr.markCache(w.Header(), cacheBypass)
	}
	if cl != nil {
		if pr.serveCached(w, cl) {
			return nil
		}
		if cl.c.Semantic != nil && pr.serveSemantic(w, cl) {
			return nil
		}
		if !pr.joinFlight(w, cl) {
			return nil // answered as a follower of an identical request
		}
		defer pr.rec.abandon()
		pr.markCache(w.Header(), cacheMiss)
	}
	pr.serve(w)
	return nil
}

// joinFlight folds the request into an identical one in flight, or makes it
// the one others fold into. It returns true when the request is to call the
// upstream itself (as the leader of a flight).
func (pr *proxyRequest) joinFlight(w http.ResponseWriter, cl *cacheLookup) bool {
	for {
		f, leader := cl.c.group.Join(cl.key)
		if leader {
			// The flight buffers no more than the store would keep.
			f.SetLimit(int(min(cl.c.MaxEntry, math.MaxInt32)))
			pr.rec = &recorder{cl: cl, flight: f}
			return true
		}
		if pr.follow(w, f, cl) {
			return false
		}
		// The leader gave up before answering: join again; one of the
		// waiters becomes the new leader. An answer stored meanwhile is
		// served from the store.
		if pr.serveCached(w, cl) {
			return false
		}
	}
}

// authenticate finds the client of a request.
func (rl *Relay) authenticate(r *http.Request) (*Client, *apiError) {
	if rl.ClientAuth == "none" {
		return anonymousClient, nil
	}
	secret := clientSecret(r.Header)
	if secret == "" {
		return nil, errUnauthorized(true)
	}
	c := rl.clients.lookup(secret)
	if c == nil {
		return nil, errUnauthorized(false)
	}
	return c, nil
}

// readBody reads the whole request body into buf, bounded by MaxBodySize. It
// is read before anything is sent upstream so that it can be checked, routed
// by its model and replayed on a retry.
func (rl *Relay) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) *apiError {
	if r.ContentLength > rl.MaxBodySize {
		return errBodyTooLarge(rl.MaxBodySize)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	// Room for what the client announced, within reason: a client that
	// announces a large body and sends little must not make the relay hold
	// the announced size.
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, maxPreallocatedBody)))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, rl.MaxBodySize))
	if err == nil {
		return nil
	}
	if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
		return errBodyTooLarge(rl.MaxBodySize)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || r.Context().Err() != nil {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Message: "The request body ended before its declared length."}
	}
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error",
		Message: "The request body could not be read: " + err.Error()}
}

// bufferPool recycles request body buffers. Buffers that grew past
// maxPooledBuffer are dropped so one huge upload does not stay pinned.
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBuffer = 1 << 20

// maxPreallocatedBody bounds the buffer reserved from Content-Length before
// the body arrives; a larger body grows it as it comes.
const maxPreallocatedBody = 256 << 10

func getBuffer() *bytes.Buffer {
	buf := bufferPool.Get().(*bytes.Buffer)
	buf.Reset()
	return buf
}

func putBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBuffer {
		bufferPool.Put(buf)
	}
}

// routeSet is the set of keys a request may use, by tier: for each tier, the
// indexes of its upstreams the client may use and that serve the model.
type routeSet struct {
	tiers    []*tier
	eligible [][]bool
}

func (rs routeSet) empty() bool { return len(rs.tiers) == 0 }

// keys yields every key of the route's eligible upstreams, tier by tier.
func (rs routeSet) keys() iter.Seq[*poolKey] {
	return func(yield func(*poolKey) bool) {
		for ti, t := range rs.tiers {
			for ui, keys := range t.keys {
				if !rs.eligible[ti][ui] {
					continue
				}
				for _, k := range keys {
					if !yield(k) {
						return
					}
				}
			}
		}
	}
}

func (rl *Relay) route(c *Client, model string) routeSet {
	var rs routeSet
	for _, t := range rl.tiers {
		var elig []bool
		for i, u := range t.upstreams {
			if !c.allowsUpstream(u.index) || !u.serves(model) {
				continue
			}
			if elig == nil {
				elig = make([]bool, len(t.upstreams))
			}
			elig[i] = true
		}
		if elig != nil {
			rs.tiers = append(rs.tiers, t)
			rs.eligible = append(rs.eligible, elig)
		}
	}
	return rs
}
