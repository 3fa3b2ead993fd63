package openairelay

import (
	"iter"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// proxyRequest carries one client request from its route to its answer.
type proxyRequest struct {
	rl     *Relay
	client *Client
	req    *http.Request
	api    *apiRequest
	route  routeSet
	repl   *caddy.Replacer

	priority  int
	deadline  time.Time // the latest moment to start an attempt (max_wait)
	estimate  int64     // estimated tokens reserved: prompt plus completion allowance
	promptEst int64     // estimated prompt tokens
	// injectedUsage is set when the relay asks a stream's upstream for
	// usage the client did not ask for (and strips it again).
	injectedUsage bool
	// sink, for a request that leads a cache flight, shares its answer
	// with identical requests and stores it (cache.go); nil otherwise.
	sink answerSink
	// pinned is the key of the organisation that created an object the
	// request names (noPin: none), found on the first try.
	pinned *poolKey
	queued time.Duration // time spent waiting for capacity
	// budgetHeld is the estimated spend reserved on the client's budget,
	// in dollars.
	budgetHeld float64
	budgetHold spendHold // its name in a shared store
	sentAt     time.Time // when the answered attempt was sent, for time to first token

	clientLimited bool        // the last try failed on the client's own limits
	tried         []*poolKey  // keys that failed this request
	failedUp      []*Upstream // upstreams that failed with a server or network error
	retries       int
	picked        *hold // the hold a key picker's try took (tryUpstreams)

	// upgrade is set for a WebSocket session's request (websocket.go):
	// its attempts dial the upstream, and keys with max_sessions_per_key
	// open sessions are passed over.
	upgrade *wsUpgrade
	// ownIDs are the responses of the WebSocket session a response.create
	// belongs to, which it may continue (stored or not).
	ownIDs map[string]bool
}

// route finds the keys that may serve the request and refuses, before the
// cache and any upstream call, a request that names stored objects of
// another client (objects.go) or a batch of models the client may not use
// (batches.go). It writes the refusal and reports false.
func (rl *Relay) route(w http.ResponseWriter, r *http.Request, client *Client, ar *apiRequest, repl *caddy.Replacer) (*proxyRequest, bool) {
	pr := rl.newProxyRequest(client, r, ar, repl, requestPriority(client, r.Header))
	if pr == nil {
		errModelNotFound(ar.model).write(w)
		return nil, false
	}
	if aerr := pr.checkObjects(); aerr != nil {
		aerr.write(w)
		return nil, false
	}
	if aerr := pr.checkBatch(); aerr != nil {
		aerr.write(w)
		return nil, false
	}
	return pr, true
}

// newProxyRequest makes the request of client for ar's model, or nil when no
// upstream the client may use serves the model. The relay's own requests
// (embed) are made here too.
func (rl *Relay) newProxyRequest(client *Client, r *http.Request, ar *apiRequest, repl *caddy.Replacer, priority int) *proxyRequest {
	route := rl.eligible(client, ar.model)
	if route.empty() {
		return nil
	}
	pr := &proxyRequest{
		rl: rl, client: client, req: r, api: ar, route: route, repl: repl,
		priority:      priority,
		deadline:      time.Now().Add(time.Duration(rl.MaxWait)),
		promptEst:     rl.estimatePrompt(ar),
		injectedUsage: ar.needsUsageOption(),
	}
	pr.estimate = pr.promptEst + rl.completionAllowance(ar)
	return pr
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

// eligible is the route of a request of client c for model: the keys of
// the upstreams c may use that serve the model, by tier.
func (rl *Relay) eligible(c *Client, model string) routeSet {
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
