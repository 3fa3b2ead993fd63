package openairelay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// proxyRequest carries one client request through its attempts.
type proxyRequest struct {
	rl     *Relay
	client *Client
	req    *http.Request
	api    *apiRequest
	route  routeSet
	repl   *caddy.Replacer

	tried    []*poolKey  // keys that failed this request
	failedUp []*Upstream // upstreams that failed with a server or network error
	retries  int
}

// failure is a failed attempt that may be retried.
type failure struct {
	outcome outcome
	// resp is the upstream's answer with its body read into body, nil for a
	// network error.
	resp *http.Response
	body []byte
	err  error
}

// serve runs the attempts and writes the response.
func (pr *proxyRequest) serve(w http.ResponseWriter) {
	var last *failure
	for attempt := 0; attempt <= pr.rl.retries; attempt++ {
		if attempt > 0 && last.outcome.backsOff() {
			if !sleepCtx(pr.req.Context(), backoff(pr.retries)) {
				return // the client left
			}
		}
		key := pr.choose()
		if key == nil {
			break
		}
		if attempt > 0 {
			pr.retries++
			retriesTotal.WithLabelValues(last.outcome.String()).Inc()
		}
		f, done := pr.attempt(w, key)
		if done {
			return
		}
		last = f
	}
	pr.fail(w, last)
}

// choose picks the key for the next attempt in the lowest tier that has an
// available key. Keys that failed this request are avoided while others
// remain, and after a server error so are the upstreams that gave it; with
// nothing else left, a key that gave a server error is tried again (keys that
// were rate limited or retired are no longer available anyway).
func (pr *proxyRequest) choose() *poolKey {
	now := time.Now()
	for _, avoid := range []struct{ keys, upstreams bool }{{true, true}, {true, false}, {false, false}} {
		if k := pr.pick(now, avoid.keys, avoid.upstreams); k != nil {
			return k
		}
	}
	return nil
}

func (pr *proxyRequest) pick(now time.Time, avoidFailedKeys, avoidFailedUpstreams bool) *poolKey {
	for ti, t := range pr.route.tiers {
		elig := pr.route.eligible[ti]
		for {
			ui := t.upSel.pick(len(t.upstreams),
				func(i int) int { return t.upstreams[i].Weight },
				func(i int) bool {
					return elig[i] && !(avoidFailedUpstreams && containsPtr(pr.failedUp, t.upstreams[i]))
				})
			if ui < 0 {
				break
			}
			keys := t.keys[ui]
			ki := t.keySel[ui].pick(len(keys),
				func(i int) int { return keys[i].weight },
				func(i int) bool {
					return !(avoidFailedKeys && containsPtr(pr.tried, keys[i])) && keys[i].state.available(now)
				})
			if ki >= 0 {
				return keys[ki]
			}
			// No usable key on this upstream: leave it out of this search.
			elig = excluding(elig, ui)
		}
	}
	return nil
}

// excluding returns a copy of set without index i; the route's own slice is
// shared with later attempts and must not change.
func excluding(set []bool, i int) []bool {
	out := append([]bool(nil), set...)
	out[i] = false
	return out
}

func containsPtr[T any](list []*T, p *T) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

// attempt sends the request with key. It returns done when the response has
// been written to the client (or the client left); otherwise the failure to
// retry.
func (pr *proxyRequest) attempt(w http.ResponseWriter, key *poolKey) (*failure, bool) {
	u := key.upstream
	pr.repl.Set(phUpstream, u.Name)
	pr.repl.Set(phKey, key.id)
	pr.repl.Set(phRetries, itoa(pr.retries))

	out, err := pr.outboundRequest(key)
	if err != nil {
		errBadRequest("The request could not be prepared for the upstream: "+err.Error(), "").write(w)
		return nil, true
	}

	key.state.inFlight.Add(1)
	key.state.requests.Add(1)
	start := time.Now()
	resp, err := u.transport.RoundTrip(out)
	key.state.inFlight.Add(-1)
	upstreamLatency.WithLabelValues(u.Name).Observe(time.Since(start).Seconds())

	if err != nil {
		if pr.req.Context().Err() != nil {
			pr.count(key, "client_closed")
			return nil, true
		}
		key.state.failures.Add(1)
		pr.rl.logger.Warn("upstream unreachable",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.Error(err))
		pr.failedUp = append(pr.failedUp, u)
		pr.tried = append(pr.tried, key)
		pr.count(key, outcomeNetwork.String())
		return &failure{outcome: outcomeNetwork, err: err}, false
	}

	oc := classify(resp.StatusCode)
	switch oc {
	case outcomeSuccess, outcomeClientError:
		pr.count(key, oc.String())
		pr.writeResponse(w, resp, key)
		return nil, true
	}

	// A failure: read the (small) error body to classify it further and to
	// pass it on if no retry succeeds.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	if oc == outcomeRateLimited && isQuotaError(body) {
		oc = outcomeDeadKey
	}
	key.state.failures.Add(1)
	pr.count(key, oc.String())
	pr.tried = append(pr.tried, key)
	now := time.Now()
	switch oc {
	case outcomeRateLimited:
		until, ok := retryAfter(resp.Header, now)
		if !ok {
			until = now.Add(time.Duration(pr.rl.Cooldown))
		}
		key.state.coolDown(until)
		pr.rl.logger.Info("upstream key rate limited; cooling down",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.Time("until", until))
	case outcomeDeadKey:
		reason := deadReason(resp.StatusCode, body)
		key.state.retire(reason, now)
		pr.rl.logger.Warn("upstream key retired",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.String("reason", reason))
	case outcomeServerError:
		pr.failedUp = append(pr.failedUp, u)
		pr.rl.logger.Warn("upstream server error",
			zap.String("upstream", u.Name), zap.String("key", key.id), zap.Int("status", resp.StatusCode))
	}
	return &failure{outcome: oc, resp: resp, body: scrub(body, key.secret)}, false
}

// maxErrorBody bounds how much of a failed attempt's body is read.
const maxErrorBody = 256 << 10

// outboundRequest builds the request to the key's upstream: the client's
// request with its credentials replaced by the key's, the model alias
// applied, and hop-by-hop headers removed.
func (pr *proxyRequest) outboundRequest(key *poolKey) (*http.Request, error) {
	u := key.upstream
	body, err := pr.api.bodyFor(u.upstreamModel(pr.api.model))
	if err != nil {
		return nil, err
	}
	target := *u.base
	target.Path = u.base.Path + "/" + pr.api.endpoint
	target.RawQuery = pr.req.URL.RawQuery

	var rd io.Reader = http.NoBody
	if pr.api.kind != bodyNone || len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(pr.req.Context(), pr.req.Method, target.String(), rd)
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
	switch u.Auth {
	case authAPIKey:
		out.Header.Set("Api-Key", key.secret)
	default:
		out.Header.Set("Authorization", "Bearer "+key.secret)
	}
	if u.HeaderUp != nil {
		u.HeaderUp.ApplyTo(out.Header, pr.repl)
	}
	return out, nil
}

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

// fail answers a request whose every attempt failed.
func (pr *proxyRequest) fail(w http.ResponseWriter, last *failure) {
	if last == nil {
		// Nothing could even be tried: every key is cooling or retired.
		if wait, ok := pr.earliestReturn(); ok {
			errNoCapacity(wait, "every upstream key for this request is cooling down after a 429.").write(w)
			return
		}
		errNoKeys().write(w)
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

// earliestReturn is how long until the first cooling key of the route comes
// back, if any key is cooling (and none retired-only).
func (pr *proxyRequest) earliestReturn() (time.Duration, bool) {
	now := time.Now()
	var earliest time.Time
	for ti, t := range pr.route.tiers {
		for ui, keys := range t.keys {
			if !pr.route.eligible[ti][ui] {
				continue
			}
			for _, k := range keys {
				until, retired := k.state.unavailableUntil()
				if retired || !until.After(now) {
					continue
				}
				if earliest.IsZero() || until.Before(earliest) {
					earliest = until
				}
			}
		}
	}
	if earliest.IsZero() {
		return 0, false
	}
	return earliest.Sub(now), true
}

func (pr *proxyRequest) count(key *poolKey, outcome string) {
	requestsTotal.WithLabelValues(key.upstream.Name, key.id, modelLabel(pr.api.model), outcome).Inc()
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

// scrub removes a key from an upstream's error body. OpenAI does not echo
// full keys, but a compatible API might, and a key must never reach a client.
func scrub(body []byte, secret string) []byte {
	if secret == "" || !bytes.Contains(body, []byte(secret)) {
		return body
	}
	return bytes.ReplaceAll(body, []byte(secret), []byte("[redacted]"))
}
