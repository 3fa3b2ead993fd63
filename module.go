package openairelay

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"path"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/limit"
)

func init() {
	caddy.RegisterModule(Relay{})
}

// Relay is an HTTP handler that relays OpenAI-compatible API requests through a
// pool of upstream API keys. It authenticates its own clients, chooses an
// upstream key for each request, rewrites the request's credentials, forwards
// it through Caddy's reverse-proxy HTTP transport, and retries on another key
// or upstream when an attempt fails before any byte reached the client.
//
// It sets these placeholders, for access logs (log_append) and later handlers:
//
// Placeholder | Description
// ------------|-------------
// `{http.openai_relay.client}` | the client's name
// `{http.openai_relay.upstream}` | the upstream that answered
// `{http.openai_relay.key}` | the id of the key that answered (its name or a fingerprint such as `sk-…a1b2`)
// `{http.openai_relay.model}` | the model the client asked for
// `{http.openai_relay.retries}` | the number of attempts after the first
// `{http.openai_relay.queue_ms}` | milliseconds the request waited for capacity
// `{http.openai_relay.prompt_tokens}` | prompt tokens the answer reported
// `{http.openai_relay.completion_tokens}` | completion tokens the answer reported
// `{http.openai_relay.cache}` | HIT, MISS, BYPASS or COALESCED when the cache is on
// `{http.openai_relay.ws_responses}` | responses a WebSocket session settled (set when it ends; the token placeholders are the session's sums)
// `{http.openai_relay.ws_messages_up}`, `{http.openai_relay.ws_messages_down}` | data messages client → upstream and upstream → client
// `{http.openai_relay.ws_bytes_up}`, `{http.openai_relay.ws_bytes_down}` | their payload bytes
// `{http.openai_relay.ws_duration_ms}` | how long the session was open
//
// With an events app, it emits the Caddy events key_retired, key_restored,
// key_cooling, budget_spent and queue_full (see events.go).
type Relay struct {
	// Clients are the callers of the relay. A request must present one of
	// their keys unless ClientAuth is "none".
	Clients []*Client `json:"clients,omitempty"`

	// ClientAuth set to "none" lets requests through without a client key,
	// as the anonymous client. It must be said explicitly: a config with no
	// clients and without it is rejected. Default: "" (keys required).
	ClientAuth string `json:"client_auth,omitempty"`

	// Upstreams are the APIs requests are relayed to. At least one is
	// required.
	Upstreams []*Upstream `json:"upstreams,omitempty"`

	// Retries is the number of further attempts after the first, each on
	// another key (another upstream first, after a server error). Default: 2.
	Retries *int `json:"retries,omitempty"`

	// MaxBodySize bounds the request body, in bytes; a larger body gets 413.
	// Default: 32 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`

	// MaxBuffered bounds the request bodies this relay holds at once (in
	// flight and queued), in bytes: past it a request gets 503 with
	// Retry-After, and what is held stays within memory. Default: 1 GiB, and
	// at least 4 × MaxBodySize.
	MaxBuffered int64 `json:"max_buffered,omitempty"`

	// Cooldown is how long a key rests after a 429 whose response says
	// nothing of when to come back. Default: 10s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`

	// Balance is how a key is chosen among the keys of an upstream that
	// have room for the request: "least_loaded" (weight × remaining
	// headroom, by sampling), "weighted_round_robin" (turns in proportion to weight,
	// earliest-deadline-first over virtual time)
	// or "weighted_random". Default: "least_loaded".
	Balance string `json:"balance,omitempty"`

	// MaxWait is the longest a request waits in the queue for a key with
	// room; past it the client gets 429 with Retry-After. It also bounds
	// the waits of retries. Default: 30s.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// MaxQueue is the most requests that may wait at once; a request
	// arriving at a full queue gets 429 at once. Default: 10000.
	MaxQueue int `json:"max_queue,omitempty"`

	// TokenEstimate is how prompt tokens are estimated before the call:
	// "chars" (about four characters a token, as OpenAI's own admission
	// estimates; takes microseconds) or "tokenizer" (an exact count with the
	// model's encoding). Default: "chars".
	TokenEstimate string `json:"token_estimate,omitempty"`

	// DefaultMaxTokens is the completion allowance reserved for a request
	// that sets no max_tokens, max_completion_tokens or max_output_tokens.
	// The reservation is corrected from the answer's usage either way.
	// Default: 0 (OpenAI's admission then counts the prompt only).
	DefaultMaxTokens int64 `json:"default_max_tokens,omitempty"`

	// ProbeBackoff is how long after its retirement a key is first probed
	// (GET /models with that key); each failed probe doubles the wait, up
	// to an hour. Default: 30s.
	ProbeBackoff caddy.Duration `json:"probe_backoff,omitempty"`

	// Prices are what models cost, per million prompt and completion
	// tokens in USD, for the spend metric and client budgets; the first
	// pattern that matches the client's model applies. Default: none
	// (nothing is priced; budgets cannot be used).
	Prices []Price `json:"prices,omitempty"`

	// Cache, when set, answers requests that are the same as an earlier
	// one from a cache, and folds identical requests in flight into one
	// upstream call. Default: off.
	Cache *CacheConfig `json:"cache,omitempty"`

	// State, when set, keeps the state that outlives a request in Redis,
	// shared by every instance that names the same Redis and prefix: key
	// limits, key health, client limits and spend, object ownership.
	// Default: none (each instance keeps its own, in memory).
	State *StateConfig `json:"state,omitempty"`

	// Objects says which stored objects (files, responses, batches, vector
	// stores, ...) a client may name: "owned", only those the relay saw its
	// requests create, or "shared", also those the relay never saw created
	// (such as objects made before the relay was put in front of the
	// organisation). Another client's objects are refused either way, and
	// lists show a client only its own (with "shared", also those of no
	// known owner). A client's own setting wins. Default: "owned".
	Objects string `json:"objects,omitempty"`

	// WebSocket bounds the WebSocket sessions (/v1/realtime, /v1/responses
	// upgraded) the relay carries. Default: see WebSocketConfig (sessions
	// of at most an hour, closed after 10 minutes idle).
	WebSocket *WebSocketConfig `json:"websocket,omitempty"`

	clients clientTable
	keys    []*poolKey
	tiers   []*tier
	retries int
	queue   *limit.Queue
	// buffered is the request body bytes this relay holds (see MaxBuffered).
	buffered *atomic.Int64
	// queueShare is how many requests one client may have waiting.
	queueShare int
	logger     *zap.Logger
	ctx        context.Context // the config's: done when it is unloaded
	// events emits the relay's Caddy events (events.go); nil when the
	// config has no events app.
	events *relayEvents
	// state is where the state that outlives a request is kept (state.go).
	state stateStore
	// stateID names the shared state in redisStates ("" in memory).
	stateID string
	// snapshotting is set once Provision has counted the config for the
	// snapshot writer, so that Cleanup uncounts it exactly once.
	snapshotting bool
	// poolHash names the relay's key pool in its clients' stable ids
	// (objects.go).
	poolHash string
	// sessions are the WebSocket sessions open through this config.
	sessions *sessionTable
}

// tier is the upstreams of one priority and their keys.
type tier struct {
	priority  int
	upstreams []*Upstream
	keys      [][]*poolKey // keys[i] are the keys of upstreams[i]
	upSel     *smoothWRR
	pickers   []keyPicker // pickers[i] chooses among keys[i]
	hint      tierHint
}

const (
	defaultRetries      = 2
	defaultMaxBodySize  = 32 << 20
	defaultMaxBuffered  = 1 << 30
	defaultCooldown     = 10 * time.Second
	defaultMaxWait      = 30 * time.Second
	defaultMaxQueue     = 10000
	defaultProbeBackoff = 30 * time.Second

	// defaultKeyBurst is the burst of an upstream key's buckets. OpenAI
	// enforces minute limits over windows of about a second; the relay
	// holds a tenth less, so that requests reserved together but delayed
	// unequally on their way (new connections, network jitter) cannot reach
	// the upstream faster than its window refills.
	defaultKeyBurst = 900 * time.Millisecond
)

// CaddyModule returns the Caddy module information.
func (Relay) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.openai_relay",
		New: func() caddy.Module { return new(Relay) },
	}
}

// Provision resolves secrets, loads transports and attaches every key to its
// shared state.
func (rl *Relay) Provision(ctx caddy.Context) error {
	rl.logger = ctx.Logger()
	rl.ctx = ctx
	rl.state = inMemory
	registerMetrics(ctx.GetMetricsRegistry())
	events, err := newRelayEvents(ctx, rl.logger)
	if err != nil {
		return err
	}
	rl.events = events

	rl.retries = defaultRetries
	if rl.Retries != nil {
		rl.retries = *rl.Retries
	}
	if rl.MaxBodySize == 0 {
		rl.MaxBodySize = defaultMaxBodySize
	}
	if rl.MaxBuffered == 0 {
		rl.MaxBuffered = max(defaultMaxBuffered, 4*rl.MaxBodySize)
	}
	rl.buffered = new(atomic.Int64)
	if rl.MaxBodySize < 0 || rl.MaxBuffered < 0 {
		return fmt.Errorf("max_body_size and max_buffered must be positive")
	}
	if rl.Cooldown == 0 {
		rl.Cooldown = caddy.Duration(defaultCooldown)
	}
	if rl.MaxWait == 0 {
		rl.MaxWait = caddy.Duration(defaultMaxWait)
	}
	if rl.MaxQueue == 0 {
		rl.MaxQueue = defaultMaxQueue
	}
	if rl.ProbeBackoff == 0 {
		rl.ProbeBackoff = caddy.Duration(defaultProbeBackoff)
	}
	if err := checkBalance(rl.Balance); err != nil {
		return err
	}
	if rl.Balance == "" {
		rl.Balance = balanceLeastLoaded
	}
	if err := rl.provisionEstimator(); err != nil {
		return err
	}
	if rl.WebSocket != nil {
		if err := rl.WebSocket.provision(); err != nil {
			return err
		}
	}
	rl.sessions = new(sessionTable)
	if err := rl.validatePrices(); err != nil {
		return err
	}
	rl.queue = limit.NewQueue(rl.MaxQueue)
	// Each client's share of the queue: all of it for a lone client.
	rl.queueShare = max(1, (rl.MaxQueue+len(rl.Clients)-1)/max(1, len(rl.Clients)))
	queues.add(rl.queue)

	loadSnapshot(rl.logger)

	// A plain replacer resolves {env.*} and {file.*}: secrets written that
	// way never appear in the JSON config Caddy saves and serves.
	repl := caddy.NewReplacer()
	if err := rl.provisionState(ctx, repl); err != nil {
		return err
	}

	names := make(map[string]int, len(rl.Upstreams))
	for i, u := range rl.Upstreams {
		if err := u.provision(ctx, i, repl); err != nil {
			return err
		}
		if _, dup := names[u.Name]; dup {
			return fmt.Errorf("upstream name %q is used twice", u.Name)
		}
		names[u.Name] = i
	}
	// Keys first: a client's stable id is its name within the key pool.
	if err := rl.provisionKeys(repl); err != nil {
		return err
	}
	rl.hashKeyPool()
	if err := rl.provisionClients(repl, names); err != nil {
		return err
	}
	if err := rl.provisionObjects(); err != nil {
		return err
	}
	if rl.Cache != nil {
		if err := rl.Cache.provision(rl); err != nil {
			return err
		}
	}
	if rs, ok := rl.state.(*redisState); ok {
		rs.sync()
	}
	addModelLabels(rl.configuredModels())
	go rl.probeRetired(ctx)
	go rl.sweepSessions(ctx)
	startSnapshots()
	startHistory()
	rl.snapshotting = true
	return nil
}

func (rl *Relay) provisionClients(repl *caddy.Replacer, upstreamIndex map[string]int) error {
	rl.clients.byHash = make(map[[32]byte]*Client)
	seen := make(map[string]bool, len(rl.Clients))
	for _, c := range rl.Clients {
		if c.Name == "" {
			return fmt.Errorf("every client needs a name")
		}
		if seen[c.Name] {
			return fmt.Errorf("client name %q is used twice", c.Name)
		}
		seen[c.Name] = true
		if len(c.Keys) == 0 {
			return fmt.Errorf("client %s: at least one key is required", c.Name)
		}
		for _, p := range slices.Concat(c.Models, c.Endpoints) {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				return fmt.Errorf("client %s: %q is not a valid glob pattern", c.Name, p)
			}
		}
		resolved := make([]string, 0, len(c.Keys))
		for _, k := range c.Keys {
			secret, err := repl.ReplaceOrErr(k, true, true)
			if err != nil {
				return fmt.Errorf("client %s: key: %v", c.Name, err)
			}
			if len(secret) < minClientKeyLength {
				return fmt.Errorf("client %s: a key of %d characters is too short to keep a client out; use at least %d (e.g. `openssl rand -hex 24`)", c.Name, len(secret), minClientKeyLength)
			}
			if err := rl.clients.add(secret, c); err != nil {
				return err
			}
			resolved = append(resolved, secret)
		}
		c.Keys = resolved
		if err := checkPriority(c.Priority); err != nil {
			return fmt.Errorf("client %s: %v", c.Name, err)
		}
		c.priority, _ = parsePriority(c.Priority)
		if err := c.Limits.validate(); err != nil {
			return fmt.Errorf("client %s: %v", c.Name, err)
		}
		if c.Budget != nil {
			if err := c.Budget.validate(); err != nil {
				return fmt.Errorf("client %s: %v", c.Name, err)
			}
			if len(rl.Prices) == 0 {
				return fmt.Errorf("client %s has a budget, but no price is configured: add `price <model-pattern> <usd per 1M input> <usd per 1M output>`", c.Name)
			}
		}
		// The client's state (limits, spend) is named by its stable id, not
		// by its keys: rotating a client's key keeps its spend and budget.
		c.stateID = ownerID(rl.poolHash, c.Name)
		if c.Limits != (Limits{}) {
			c.limiter = rl.state.load(c.stateID, c.Limits)
		}
		state, loaded := clientStates.LoadOrStore(c.stateID, &clientState{})
		c.state = state.(*clientState)
		if !loaded {
			restoreSpend(c.stateID, c.state)
		}
		c.state.set(c.stateID, c.Name, cmp.Or(c.Priority, "normal"), c.limiter, c.Budget)
		if len(c.Upstreams) > 0 {
			c.allowed = make(upstreamSet, len(rl.Upstreams))
			for _, name := range c.Upstreams {
				i, ok := upstreamIndex[name]
				if !ok {
					return fmt.Errorf("client %s: unknown upstream %q", c.Name, name)
				}
				c.allowed[i] = true
			}
		}
	}
	return nil
}

func (rl *Relay) provisionKeys(repl *caddy.Replacer) error {
	ids := make(map[string]int)
	byPriority := make(map[int]*tier)
	for _, u := range rl.Upstreams {
		if err := u.Limits.validate(); err != nil {
			return fmt.Errorf("upstream %s: %v", u.Name, err)
		}
		groups, err := groupLimits(u)
		if err != nil {
			return err
		}
		t := byPriority[u.Priority]
		if t == nil {
			t = &tier{priority: u.Priority}
			byPriority[u.Priority] = t
			rl.tiers = append(rl.tiers, t)
		}
		var upKeys []*poolKey
		for _, k := range u.Keys {
			secret, err := repl.ReplaceOrErr(k.Key, true, true)
			if err != nil {
				return fmt.Errorf("upstream %s: key: %v", u.Name, err)
			}
			if k.Weight < 0 {
				return fmt.Errorf("upstream %s: key weight must be positive", u.Name)
			}
			if err := k.Limits.validate(); err != nil {
				return fmt.Errorf("upstream %s: key: %v", u.Name, err)
			}
			id := k.Name
			if id == "" {
				id = keyFingerprint(secret)
			}
			// Two keys ending alike get distinct ids within one config.
			if n := ids[id]; n > 0 {
				ids[id] = n + 1
				id = fmt.Sprintf("%s~%d", id, n+1)
			} else {
				ids[id] = 1
			}
			pk := &poolKey{
				id:       id,
				secret:   secret,
				upstream: u,
				weight:   max(k.Weight, 1),
				poolID:   keyPoolID(withoutUserinfo(u.base), secret),
			}
			lim := k.Limits.orDefaults(u.Limits).orDefaults(Limits{Burst: caddy.Duration(defaultKeyBurst)})
			pk.limiterID = "key:" + pk.poolID
			if k.LimitGroup != "" {
				lim = groups[k.LimitGroup]
				pk.limiterID = "group:" + withoutUserinfo(u.base) + "#" + k.LimitGroup
			}
			pk.limiter = rl.state.load(pk.limiterID, lim)
			pk.unconfigured = lim.RPM == 0 && lim.TPM == 0
			state, loaded := keyStates.LoadOrStore(pk.poolID, &keyState{})
			pk.state = state.(*keyState)
			if !loaded {
				restoreKey(pk.poolID, pk.state, time.Duration(rl.ProbeBackoff))
			}
			pk.state.describe(keyInfo{tier: u.Priority, upstreamWeight: max(u.Weight, 1), weight: pk.weight, id: id, poolID: pk.poolID, upstream: u.Name, group: k.LimitGroup, limiter: pk.limiter, store: rl.state, events: rl.events})
			rl.state.track(pk.poolID, pk.state)
			rl.keys = append(rl.keys, pk)
			upKeys = append(upKeys, pk)
		}
		picker, err := newKeyPicker(rl.Balance, upKeys)
		if err != nil {
			return err
		}
		t.upstreams = append(t.upstreams, u)
		t.keys = append(t.keys, upKeys)
		t.pickers = append(t.pickers, picker)
	}
	slices.SortFunc(rl.tiers, func(a, b *tier) int { return a.priority - b.priority })
	for _, t := range rl.tiers {
		t.upSel = newSmoothWRR(len(t.upstreams))
	}
	return nil
}

// groupLimits works out the limits of each limit group of an upstream: the
// limits set on its keys, which must agree, over the upstream's defaults.
func groupLimits(u *Upstream) (map[string]Limits, error) {
	groups := make(map[string]Limits)
	for _, k := range u.Keys {
		if k.LimitGroup == "" {
			continue
		}
		g := groups[k.LimitGroup]
		merged, err := mergeLimits(g, k.Limits)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: limit_group %s: %v", u.Name, k.LimitGroup, err)
		}
		groups[k.LimitGroup] = merged
	}
	for name, g := range groups {
		groups[name] = g.orDefaults(u.Limits).orDefaults(Limits{Burst: caddy.Duration(defaultKeyBurst)})
	}
	return groups, nil
}

// mergeLimits combines the limits given on two keys of one group.
func mergeLimits(a, b Limits) (Limits, error) {
	pairs := []struct {
		name string
		x, y *int64
	}{{"rpm", &a.RPM, &b.RPM}, {"tpm", &a.TPM, &b.TPM}, {"rpd", &a.RPD, &b.RPD}, {"tpd", &a.TPD, &b.TPD},
		{"max_concurrent", &a.MaxConcurrent, &b.MaxConcurrent}}
	for _, p := range pairs {
		switch {
		case *p.y == 0:
		case *p.x == 0:
			*p.x = *p.y
		case *p.x != *p.y:
			return a, fmt.Errorf("its keys set %s to both %d and %d", p.name, *p.x, *p.y)
		}
	}
	if b.Burst != 0 {
		if a.Burst != 0 && a.Burst != b.Burst {
			return a, fmt.Errorf("its keys set different bursts")
		}
		a.Burst = b.Burst
	}
	return a, nil
}

// Validate checks the provisioned config.
func (rl *Relay) Validate() error {
	switch rl.ClientAuth {
	case "":
		if len(rl.Clients) == 0 {
			return fmt.Errorf("no client is configured: add a client with a key, or say `client_auth none` to let anyone who reaches this route use the upstream keys")
		}
	case "none":
		if len(rl.Clients) > 0 {
			return fmt.Errorf("client_auth none and clients are both configured: remove one")
		}
	default:
		return checkClientAuth(rl.ClientAuth)
	}
	if len(rl.Upstreams) == 0 {
		return fmt.Errorf("at least one upstream is required")
	}
	if rl.retries < 0 {
		return fmt.Errorf("retries must not be negative")
	}
	if rl.MaxBodySize < 0 {
		return fmt.Errorf("max_body_size must not be negative")
	}
	if rl.MaxWait < 0 || rl.MaxQueue < 0 || rl.DefaultMaxTokens < 0 {
		return fmt.Errorf("max_wait, max_queue and default_max_tokens must not be negative")
	}
	return nil
}

// minClientKeyLength is the shortest client key accepted: a shorter one
// could be guessed.
const minClientKeyLength = 8

// withoutUserinfo is a URL as it may be named in state that is saved and
// shown: without a user name or password.
func withoutUserinfo(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// configuredModels lists the model names and patterns the config names, the
// values of the metrics' model label.
func (rl *Relay) configuredModels() []string {
	var names []string
	for _, c := range rl.Clients {
		names = append(names, c.Models...)
	}
	for _, u := range rl.Upstreams {
		names = append(names, u.Models...)
		for from, to := range u.ModelAliases {
			names = append(names, from, to)
		}
	}
	for _, p := range rl.Prices {
		names = append(names, p.Model)
	}
	if rl.Cache != nil && rl.Cache.Semantic != nil {
		names = append(names, rl.Cache.Semantic.Model)
	}
	return names
}

// Cleanup releases this config's hold on the shared key states. Caddy calls
// it also when Provision failed half-way, so it copes with a partial state.
func (rl *Relay) Cleanup() error {
	// Saved before the states are released: on a stop this is the last
	// chance, and on a reload the new config holds them anyway.
	if len(rl.keys) > 0 {
		if err := saveSnapshot(); err != nil && rl.logger != nil {
			rl.logger.Warn("could not save the relay state", zap.String("file", snapshotPath()), zap.Error(err))
		}
	}
	if rl.snapshotting {
		stopSnapshots()
		stopHistory()
		rl.snapshotting = false
	}
	for _, k := range rl.keys {
		if k.state != nil {
			rl.state.untrack(k.poolID)
			_, _ = keyStates.Delete(k.poolID)
		}
		if k.limiter != nil {
			rl.state.release(k.limiterID)
		}
	}
	for _, c := range rl.Clients {
		if c.limiter != nil {
			rl.state.release(c.stateID)
		}
		if c.state != nil {
			_, _ = clientStates.Delete(c.stateID)
		}
	}
	if rl.queue != nil {
		queues.remove(rl.queue)
	}
	if rl.Cache != nil {
		rl.Cache.cleanup()
	}
	if rl.stateID != "" {
		_, _ = redisStates.Delete(rl.stateID)
		rl.stateID = ""
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Relay)(nil)
	_ caddy.Validator             = (*Relay)(nil)
	_ caddy.CleanerUpper          = (*Relay)(nil)
	_ caddyhttp.MiddlewareHandler = (*Relay)(nil)
	_ caddyfile.Unmarshaler       = (*Relay)(nil)
)
