package openairelay

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// Client is a caller of the relay, identified by one of its keys.
type Client struct {
	// Name identifies the client in logs, metrics, placeholders and the
	// admin API. Required and unique.
	Name string `json:"name"`

	// Keys are the client's secrets, sent by the client as
	// `Authorization: Bearer <key>` or `api-key: <key>`. Write them as
	// runtime placeholders ({env.X} or {file./path}) to keep them out of the
	// saved config. At least one is required.
	Keys []string `json:"keys"`

	// Models lists the models the client may use, as glob patterns.
	// Default: any.
	Models []string `json:"models,omitempty"`

	// Endpoints lists the API paths after /v1 the client may call, as glob
	// patterns (path.Match, where * stays within a segment); a pattern also
	// admits the paths below it ("files" admits "files/file-abc/content").
	// The endpoints that hand out an upstream-issued credential
	// (realtime/client_secrets, realtime/sessions,
	// realtime/transcription_sessions) are callable only when a pattern
	// names them. Default: every other endpoint.
	Endpoints []string `json:"endpoints,omitempty"`

	// Upstreams lists the upstreams, by name, the client may use.
	// Default: all.
	Upstreams []string `json:"upstreams,omitempty"`

	// Priority orders this client's requests in the queue when the pool is
	// busy: "high", "normal" or "low". A request may lower its own priority
	// with an X-Relay-Priority header, never raise it. Default: "normal".
	Priority string `json:"priority,omitempty"`

	// Limits are the client's own limits, enforced before any key is
	// chosen and reported to it in x-ratelimit-* response headers.
	// Default: none.
	Limits

	// Budget caps what the client may spend by the relay's prices.
	// Default: none.
	Budget *Budget `json:"budget,omitempty"`

	// Objects is the relay's Objects for this client alone: "owned" (only
	// the stored objects its own requests created) or "shared" (also those
	// the relay never saw created). Default: the relay's, whose default is
	// "owned".
	Objects string `json:"objects,omitempty"`

	allowed  upstreamSet // resolved from Upstreams
	priority int
	limiter  *limit.Limiter // nil without limits
	stateID  string
	state    *clientState
	// ownerID is the client's stable id, owner of the objects it creates:
	// its relay's key pool and its name (objects.go). sharedObjects is its
	// objects setting resolved.
	ownerID       string
	sharedObjects bool
}

// clientState is what the admin API shows of a client.
type clientState struct {
	mu       sync.Mutex
	id       string // its stable id (Client.stateID)
	name     string
	priority string
	limiter  *limit.Limiter

	requests  atomic.Int64
	tokensIn  atomic.Int64
	tokensOut atomic.Int64
	sessions  atomic.Int64 // WebSocket sessions open
	budget    *Budget      // nil without one

	// What the client spent in the current day and month, by the prices.
	spendDay, spendMonth string
	spentDay, spentMonth float64
	spentTotal           float64
	// reserved is what requests in flight are estimated to cost: a budget
	// admits a request only while spent + reserved is under it.
	reserved float64

	// waiting counts the client's requests in the queue (see
	// Relay.queueShare).
	waiting atomic.Int64

	// refused names the last budget period in which the budget refused a
	// request ("monthly 2026-11"), so that budget_spent is emitted once a
	// period.
	refused string
}

// firstRefusal records that the client's budget refused a request in the
// period named period, and reports whether it is the first refusal there.
func (cs *clientState) firstRefusal(period string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.refused == period {
		return false
	}
	cs.refused = period
	return true
}

// reserveSpend admits a request estimated at usd against budget, as long as
// what is spent and reserved is under it; concurrent requests thus overshoot
// the budget by at most one request's estimate.
func (cs *clientState) reserveSpend(now time.Time, period string, budget, usd float64) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.rollover(now)
	spent := cs.spentMonth
	if period == "daily" {
		spent = cs.spentDay
	}
	if spent+cs.reserved >= budget {
		return false
	}
	cs.reserved += usd
	return true
}

// releaseSpend gives back a reservation made by reserveSpend.
func (cs *clientState) releaseSpend(usd float64) {
	cs.mu.Lock()
	cs.reserved = max(cs.reserved-usd, 0)
	cs.mu.Unlock()
}

// addSpend adds usd to the client's spend in the periods now falls in.
func (cs *clientState) addSpend(now time.Time, usd float64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.rollover(now)
	cs.spentDay += usd
	cs.spentMonth += usd
	cs.spentTotal += usd
}

// spent is what the client spent in the period ("daily" or "monthly") now
// falls in.
func (cs *clientState) spent(period string, now time.Time) float64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.rollover(now)
	if period == "daily" {
		return cs.spentDay
	}
	return cs.spentMonth
}

// rollover starts new periods. The caller holds cs.mu.
func (cs *clientState) rollover(now time.Time) {
	if d := periodOf("daily", now); d != cs.spendDay {
		cs.spendDay, cs.spentDay = d, 0
	}
	if m := periodOf("monthly", now); m != cs.spendMonth {
		cs.spendMonth, cs.spentMonth = m, 0
	}
}

// mirrorSpend replaces the spend by what the shared store holds.
func (cs *clientState) mirrorSpend(day string, spentDay float64, month string, spentMonth, total float64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.spendDay, cs.spentDay, cs.spendMonth, cs.spentMonth, cs.spentTotal = day, spentDay, month, spentMonth, total
}

// Destruct implements caddy.Destructor.
func (*clientState) Destruct() error { return nil }

func (cs *clientState) set(id, name, priority string, l *limit.Limiter, b *Budget) {
	cs.mu.Lock()
	cs.id, cs.name, cs.priority, cs.limiter, cs.budget = id, name, priority, l, b
	cs.mu.Unlock()
}

func (cs *clientState) describe() (name, priority string, l *limit.Limiter) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.name, cs.priority, cs.limiter
}

// upstreamSet is a set of upstream indexes.
type upstreamSet []bool

// anonymousClient is the client of every request when client_auth is none.
var anonymousClient = &Client{Name: "anonymous", priority: priorityNormal, state: &clientState{name: "anonymous", priority: "normal"}}

// clientTable finds clients by key. Keys are held only as SHA-256 hashes and
// looked up by the hash of the presented key. The map's key comparison is not
// constant-time, but what it could leak through timing is how many leading
// bytes of two SHA-256 digests agree, which tells an attacker nothing about a
// secret (finding a key with a chosen digest prefix is a preimage search).
type clientTable struct {
	byHash map[[sha256.Size]byte]*Client
}

func (t *clientTable) add(secret string, c *Client) error {
	if secret == "" {
		return fmt.Errorf("client %s: empty key (is its environment variable or file set?)", c.Name)
	}
	h := sha256.Sum256([]byte(secret))
	if other, dup := t.byHash[h]; dup {
		return fmt.Errorf("client %s: a key is also used by client %s", c.Name, other.Name)
	}
	t.byHash[h] = c
	return nil
}

func (t *clientTable) lookup(secret string) *Client {
	return t.byHash[sha256.Sum256([]byte(secret))]
}

// clientSecret extracts the key a client presented, from
// `Authorization: Bearer <key>` or from `api-key: <key>`.
func clientSecret(h http.Header) string {
	if auth := h.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
	}
	if k := strings.TrimSpace(h.Get("Api-Key")); k != "" {
		return k
	}
	// A browser's WebSocket cannot set headers: it passes the key as a
	// subprotocol (websocket.go).
	return subprotocolSecret(h)
}

// allowsModel reports whether the client may use model. Requests without a
// model (listing models, files, batches) are allowed.
func (c *Client) allowsModel(model string) bool {
	if len(c.Models) == 0 || model == "" {
		return true
	}
	for _, p := range c.Models {
		if ok, _ := path.Match(p, model); ok {
			return true
		}
	}
	return false
}

// credentialEndpoints answer with an ephemeral credential of the upstream
// key (ek_…): whoever holds it talks to the upstream directly, past the
// relay's limits and budgets, so a client gets one only when its endpoints
// name them.
var credentialEndpoints = []string{"realtime/client_secrets", "realtime/sessions", "realtime/transcription_sessions"}

// allowsEndpoint reports whether the client may call endpoint (the path
// after /v1).
func (c *Client) allowsEndpoint(endpoint string) bool {
	if len(c.Endpoints) == 0 {
		return !slices.Contains(credentialEndpoints, endpoint)
	}
	return c.namesEndpoint(endpoint)
}

// namesEndpoint reports whether the client's endpoints name endpoint.
func (c *Client) namesEndpoint(endpoint string) bool {
	for _, p := range c.Endpoints {
		if endpointMatch(p, endpoint) {
			return true
		}
	}
	return false
}

// endpointMatch reports whether pattern matches endpoint or one of the
// paths it lies below.
func endpointMatch(pattern, endpoint string) bool {
	pattern = strings.Trim(pattern, "/")
	for p := endpoint; ; {
		if ok, _ := path.Match(pattern, p); ok {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// allowsUpstream reports whether the client may use the upstream at index i.
func (c *Client) allowsUpstream(i int) bool {
	return c.allowed == nil || (i < len(c.allowed) && c.allowed[i])
}

// openSession counts a WebSocket session of the client, unless it has max
// open already (0: no bound); the caller uncounts it when it ends.
func (cs *clientState) openSession(max int) bool {
	if n := cs.sessions.Add(1); max > 0 && n > int64(max) {
		cs.sessions.Add(-1)
		return false
	}
	return true
}
