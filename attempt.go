package openairelay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// failure is a failed attempt that may be retried.
type failure struct {
	outcome outcome
	// resp is the upstream's answer with its body read into body, nil for a
	// network error.
	resp *http.Response
	body []byte
	err  error
	// final is set when the attempt is not to be repeated: it may have had
	// its effect upstream (see createsObject), or the request cannot be
	// sent (answer).
	final bool
	// answer, when set, is the relay's own answer to write.
	answer *apiError
}

// callContext is the context of the request's upstream calls. For the
// leader of a cache flight, identical requests follow its answer: its
// client going away ends the upstream call only if none of them is left
// (the copy loop stops then too), so that they are not cut off with it.
func (pr *proxyRequest) callContext() (context.Context, context.CancelFunc) {
	ctx := pr.req.Context()
	if pr.sink == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sink := pr.sink
	stop := context.AfterFunc(pr.req.Context(), func() {
		if !sink.following() {
			cancel()
		}
	})
	return ctx, func() {
		stop()
		cancel()
	}
}

// pause waits before a retry after a server or network error; it reports
// false when the client left meanwhile.
func (pr *proxyRequest) pause(last *failure) bool {
	return !last.outcome.backsOff() || sleepCtx(pr.req.Context(), backoff(pr.retries))
}

// countRetry counts an attempt after the first, by what failed before it.
func (pr *proxyRequest) countRetry(last *failure) {
	pr.retries++
	retriesTotal.WithLabelValues(last.outcome.String()).Inc()
}

func containsPtr[T any](list []*T, p *T) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

// attempt sends the request with the key h holds. It returns the upstream's
// answer the client is to see (success: a 2xx, not a client error), whose
// hold respond and finish settle; or the failure to retry, with the hold
// settled or given back; or neither when the client left.
func (pr *proxyRequest) attempt(ctx context.Context, h *hold) (resp *http.Response, success bool, f *failure) {
	key := h.key
	u := key.upstream
	pr.repl.Set(phUpstream, u.Name)
	pr.repl.Set(phKey, key.id)
	pr.repl.Set(phRetries, strconv.Itoa(pr.retries))

	out, err := pr.outboundRequest(ctx, key)
	if err != nil {
		h.cancel()
		return nil, false, &failure{final: true,
			answer: errBadRequest("The request could not be prepared for the upstream: "+err.Error(), "")}
	}

	key.state.requests.Add(1)
	var trace httptrace.ClientTrace
	if lim := key.limiter.Limits(); lim.RPM > 0 || lim.TPM > 0 {
		trace.WroteHeaders = h.sent
	}
	onceOnly := pr.req.Method == http.MethodPost && createsObject(pr.api.endpoint)
	var wrote atomic.Bool
	if onceOnly {
		trace.WroteRequest = func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				wrote.Store(true)
			}
		}
	}
	if trace.WroteHeaders != nil || trace.WroteRequest != nil {
		out = out.WithContext(httptrace.WithClientTrace(out.Context(), &trace))
	}
	start := time.Now()
	resp, err = u.transport.RoundTrip(out)
	elapsed := time.Since(start)
	upstreamLatency.WithLabelValues(u.Name).Observe(elapsed.Seconds())

	if err != nil {
		// The request may or may not have reached the upstream; a
		// connection that failed is the common case, and it cost nothing.
		h.cancel()
		if pr.req.Context().Err() != nil {
			pr.count(key, "client_closed")
			return nil, false, nil
		}
		key.state.failures.Add(1)
		pr.rl.logger.Warn("upstream unreachable",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.Error(err))
		pr.failedUp = append(pr.failedUp, u)
		pr.tried = append(pr.tried, key)
		pr.count(key, outcomeNetwork.String())
		// A request that creates an object and reached the upstream whole
		// may have created it: sending it again could make two.
		return nil, false, &failure{outcome: outcomeNetwork, err: err, final: onceOnly && wrote.Load()}
	}
	key.state.observeLatency(elapsed)
	now := time.Now()
	// The upstream counted the request, and reported its limits, as it
	// arrived: its headers describe the key as of then, not of now.
	pr.rl.state.learn(key.limiter, start, now, resp.Header)
	if resp.StatusCode < 500 {
		// The upstream itself answered (a gateway's 5xx may carry none of
		// its headers): what it says of the key's limits is known now.
		key.state.answered.Store(true)
	}

	var body []byte
	if needsBody(resp.StatusCode) {
		// Whether a 401, 403 or 429 is about the key or the request is in
		// its (small) error body.
		body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	v := classify(resp.StatusCode, body)
	oc := v.outcome
	switch oc {
	case outcomeSuccess, outcomeClientError:
		pr.count(key, oc.String())
		if v.suspect {
			pr.rl.confirmKey(key, resp.StatusCode, body)
		}
		pr.sentAt = start
		return resp, oc == outcomeSuccess, nil
	}

	// A failure: read the (small) error body to pass it on if no retry
	// succeeds.
	if body == nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
	}
	key.state.failures.Add(1)
	pr.count(key, oc.String())
	pr.tried = append(pr.tried, key)
	f = &failure{outcome: oc}
	switch oc {
	case outcomeRateLimited:
		// The upstream refused the request, so it counted nothing: give
		// the reservation back, and rest the key (and its limit group).
		h.cancel()
		until := pr.rl.coolUntil(resp.Header, now)
		// Announced when the key (or its limit group) was not resting
		// already: a burst of 429s is one event.
		wasCooling := key.limiter.CoolingUntil().After(now)
		// The upstream's bucket is empty: when the cool-down ends, one
		// request fits, not a bucketful.
		pr.rl.state.exhausted(key.limiter, until, pr.estimate)
		pr.rl.logger.Info("upstream key rate limited; cooling down",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.Time("until", until))
		if !wasCooling {
			pr.rl.events.keyCooling(key, until)
		}
	case outcomeDeadKey:
		h.cancel()
		pr.rl.retireKey(key, deadReason(resp.StatusCode, body), now)
	case outcomeServerError:
		// The request reached the upstream and may count against the key's
		// requests, but it produced no tokens.
		h.settle(0)
		pr.failedUp = append(pr.failedUp, u)
		f.final = onceOnly // the upstream had it: it may have created the object
		pr.rl.logger.Warn("upstream server error",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.Int("status", resp.StatusCode))
	}
	scrubHeader(resp.Header, key.secret, u.base)
	f.resp, f.body = resp, scrub(body, key.secret)
	return nil, false, f
}

// objectCreators are the first path segments of the endpoints whose POSTs
// create a stored object (a file, an upload or its part, a batch, a
// fine-tuning job, a vector store, ...): such a request is not idempotent,
// and is not sent again once the upstream may have acted on it. Cancelling
// is idempotent.
var objectCreators = []string{"files", "uploads", "batches", "fine_tuning", "vector_stores",
	"assistants", "threads", "conversations", "containers", "evals"}

func createsObject(endpoint string) bool {
	first, _, _ := strings.Cut(endpoint, "/")
	return slices.Contains(objectCreators, first) && !strings.HasSuffix(endpoint, "/cancel")
}

// maxCooldown bounds the rest a 429 can impose on a key: an upstream that
// says to wait for years (or a header that is garbage) must not take the
// key out for good. A key still limited after it gets another 429.
const maxCooldown = time.Hour

// coolUntil is when a key that got a 429 at now may be tried again: when
// the answer says (retry-after-ms, Retry-After, the reset headers), else
// after the relay's cooldown, and never more than maxCooldown away.
func (rl *Relay) coolUntil(h http.Header, now time.Time) time.Time {
	until, ok := limit.RetryAfter(h, now)
	if !ok {
		until = now.Add(time.Duration(rl.Cooldown))
	}
	if limitAt := now.Add(maxCooldown); until.After(limitAt) {
		return limitAt
	}
	return until
}

// maxErrorBody bounds how much of a failed attempt's body is read.
const maxErrorBody = 256 << 10

// outboundRequest builds the request to the key's upstream: the client's
// request with its credentials replaced by the key's, the model alias
// applied, and hop-by-hop headers removed.
func (pr *proxyRequest) outboundRequest(ctx context.Context, key *poolKey) (*http.Request, error) {
	if pr.upgrade != nil {
		return pr.upgradeRequest(ctx, key)
	}
	u := key.upstream
	body, err := pr.api.bodyFor(u.upstreamModel(pr.api.model), pr.injectedUsage)
	if err != nil {
		return nil, err
	}
	target := *u.base
	target.Path = u.base.Path + "/" + pr.api.endpoint
	target.RawQuery = joinQuery(u.base.RawQuery, pr.req.URL.RawQuery)

	var rd io.Reader = http.NoBody
	if pr.api.kind != bodyNone || len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(ctx, pr.req.Method, target.String(), rd)
	if err != nil {
		return nil, err
	}
	out.Header = outboundHeader(pr.req.Header)
	out.ContentLength = int64(len(body))
	if rd == http.NoBody {
		out.ContentLength = 0
	}
	out.Host = u.base.Host
	if pr.api.fixContentType {
		out.Header.Set("Content-Type", "application/json")
	}
	setKeyAuth(out.Header, key)
	if u.HeaderUp != nil {
		u.HeaderUp.ApplyTo(out.Header, pr.repl)
	}
	return out, nil
}

// joinQuery is the query of a request to an upstream whose URL has a query
// of its own (Azure's api-version): the upstream's parameters, then the
// client's that do not set one of them.
func joinQuery(upstream, client string) string {
	if upstream == "" {
		return client
	}
	if client == "" {
		return upstream
	}
	base, err := url.ParseQuery(upstream)
	if err != nil {
		return upstream + "&" + client
	}
	var extra []string
	for part := range strings.SplitSeq(client, "&") {
		name, _, _ := strings.Cut(part, "=")
		if n, err := url.QueryUnescape(name); err == nil && base.Has(n) {
			continue
		}
		extra = append(extra, part)
	}
	if len(extra) == 0 {
		return upstream
	}
	return upstream + "&" + strings.Join(extra, "&")
}

// setKeyAuth sets the header that carries the key, as the upstream wants it.
func setKeyAuth(h http.Header, key *poolKey) {
	if key.upstream.Auth == authAPIKey {
		h.Set("Api-Key", key.secret)
		return
	}
	h.Set("Authorization", "Bearer "+key.secret)
}

// fail answers a request whose every attempt failed. Identical requests
// folded into this one get the same answer: each of them running the whole
// retry cycle again in turn would only repeat it.
func (pr *proxyRequest) fail(w http.ResponseWriter, last *failure) {
	if pr.sink == nil {
		pr.writeFailure(w, last)
		return
	}
	bw := &bufferWriter{header: make(http.Header)}
	pr.writeFailure(bw, last)
	resp := &http.Response{StatusCode: bw.status, Header: bw.header}
	pr.sink.start(resp)
	_, _ = pr.sink.Write(bw.body.Bytes())
	pr.sink.end(context.WithoutCancel(pr.req.Context()), resp, nil) // not 2xx: shared, never stored
	for k, v := range bw.header {
		w.Header()[k] = v
	}
	w.WriteHeader(bw.status)
	_, _ = w.Write(bw.body.Bytes())
}

// writeFailure writes the answer to a request whose every attempt failed.
func (pr *proxyRequest) writeFailure(w http.ResponseWriter, last *failure) {
	if last == nil {
		// Nothing could even be tried: every key is cooling or retired.
		if wait, ok := pr.earliestReturn(); ok {
			errNoCapacity(wait, "every upstream key for this request is cooling down after a 429.").write(w)
			return
		}
		errNoKeys().write(w)
		return
	}
	if last.answer != nil {
		last.answer.write(w)
		return
	}
	switch last.outcome {
	case outcomeRateLimited:
		wait, _ := pr.earliestReturn()
		errNoCapacity(max(wait, time.Second), "every upstream key tried answered 429.").write(w)
	case outcomeDeadKey:
		errNoKeys().write(w)
	case outcomeNetwork:
		if isTimeout(last.err) {
			errUpstream(http.StatusGatewayTimeout, "The upstream did not answer in time.").write(w)
			return
		}
		errUpstream(http.StatusBadGateway, "The upstream could not be reached.").write(w)
	default:
		// A server error from the upstream: pass the last one on as it was.
		copyResponseHeader(w.Header(), last.resp.Header)
		w.Header().Del("Content-Length")
		w.WriteHeader(last.resp.StatusCode)
		_, _ = w.Write(last.body)
	}
}

// earliestReturn is how long until the first cooling key of the route
// comes back, if any key is cooling.
func (pr *proxyRequest) earliestReturn() (time.Duration, bool) {
	now := time.Now()
	var earliest time.Time
	for k := range pr.route.keys() {
		until := k.limiter.CoolingUntil()
		if k.state.retired() || !until.After(now) {
			continue
		}
		if earliest.IsZero() || until.Before(earliest) {
			earliest = until
		}
	}
	if earliest.IsZero() {
		return 0, false
	}
	return earliest.Sub(now), true
}

func (pr *proxyRequest) count(key *poolKey, outcome string) {
	requestsTotal.WithLabelValues(key.upstream.Name, key.id, outcome).Inc()
	key.state.minute.add(time.Now(), 1, 0)
	i := slices.Index(historyOutcomes[:], outcome)
	if i < 0 {
		i = int(outcomeNetwork)
	}
	traffic.outcomes[i].Add(1)
	if outcome == "rate_limited" {
		key.state.rateLimited.Add(1)
	}
	modelRequestsTotal.WithLabelValues(modelLabel(pr.api.model), outcome).Inc()
}

// backoff is the pause before retry n+1 after a server or network error:
// exponential from 100ms, capped at 2s, with full jitter so that retries from
// many clients do not arrive together.
func backoff(n int) time.Duration {
	ceiling := min(100*time.Millisecond<<n, 2*time.Second)
	return time.Duration(rand.Int64N(int64(ceiling)) + 1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
