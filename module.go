package openairelay

import (
	"fmt"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
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

	// Cooldown is how long a key rests after a 429 whose response says
	// nothing of when to come back. Default: 10s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`

	clients clientTable
	keys    []*poolKey
	tiers   []*tier
	retries int
	logger  *zap.Logger
}

// tier is the upstreams of one priority and their keys.
type tier struct {
	priority  int
	upstreams []*Upstream
	keys      [][]*poolKey // keys[i] are the keys of upstreams[i]
	upSel     *smoothWRR
	keySel    []*smoothWRR
}

const (
	defaultRetries     = 2
	defaultMaxBodySize = 32 << 20
	defaultCooldown    = 10 * time.Second
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
	registerMetrics(ctx.GetMetricsRegistry())

	rl.retries = defaultRetries
	if rl.Retries != nil {
		rl.retries = *rl.Retries
	}
	if rl.MaxBodySize == 0 {
		rl.MaxBodySize = defaultMaxBodySize
	}
	if rl.Cooldown == 0 {
		rl.Cooldown = caddy.Duration(defaultCooldown)
	}

	// A plain replacer resolves {env.*} and {file.*}: secrets written that
	// way never appear in the JSON config Caddy saves and serves.
	repl := caddy.NewReplacer()

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
	if err := rl.provisionClients(repl, names); err != nil {
		return err
	}
	return rl.provisionKeys(repl)
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
		resolved := make([]string, 0, len(c.Keys))
		for _, k := range c.Keys {
			secret, err := repl.ReplaceOrErr(k, true, true)
			if err != nil {
				return fmt.Errorf("client %s: key: %v", c.Name, err)
			}
			if err := rl.clients.add(secret, c); err != nil {
				return err
			}
			resolved = append(resolved, secret)
		}
		c.Keys = resolved
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
				poolID:   keyPoolID(u.base.String(), secret),
			}
			state, _ := keyStates.LoadOrStore(pk.poolID, &keyState{id: id})
			pk.state = state.(*keyState)
			rl.keys = append(rl.keys, pk)
			upKeys = append(upKeys, pk)
		}
		t.upstreams = append(t.upstreams, u)
		t.keys = append(t.keys, upKeys)
		t.keySel = append(t.keySel, newSmoothWRR(len(upKeys)))
	}
	slices.SortFunc(rl.tiers, func(a, b *tier) int { return a.priority - b.priority })
	for _, t := range rl.tiers {
		t.upSel = newSmoothWRR(len(t.upstreams))
	}
	return nil
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
		return fmt.Errorf("client_auth must be \"none\" or absent, not %q", rl.ClientAuth)
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
	return nil
}

// Cleanup releases this config's hold on the shared key states. Caddy calls
// it also when Provision failed half-way, so it copes with a partial state.
func (rl *Relay) Cleanup() error {
	for _, k := range rl.keys {
		if k.state != nil {
			_, _ = keyStates.Delete(k.poolID)
		}
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
