package openairelay

import (
	"cmp"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("openai_relay", parseCaddyfile)
	// The relay is a terminal proxy handler like reverse_proxy, so it takes
	// the same place in the directive order; users need no `order` option.
	httpcaddyfile.RegisterDirectiveOrder("openai_relay", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	rl := new(Relay)
	err := rl.UnmarshalCaddyfile(h.Dispenser)
	return rl, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	openai_relay [<matcher>] {
//		client <name> {
//			key       <secret...>      # repeatable; write {env.X} or {file./path}
//			models    <pattern...>     # allowed models (globs); default any
//			upstreams <name...>        # allowed upstreams; default all
//			priority  high|normal|low  # queue order when the pool is busy; default normal
//			budget    <usd> [daily|monthly]   # spend cap by the prices; default monthly
//			endpoints <pattern...>     # API paths after /v1 it may call (globs); default all but
//			                           #   realtime/client_secrets, realtime/sessions, realtime/transcription_sessions
//			objects   owned|shared     # stored objects it may name; default the relay's
//			rpm <n>  tpm <n>  rpd <n>  tpd <n>  max_concurrent <n>  burst <duration>
//		}
//		client_auth none               # explicit opt-out of client keys
//
//		upstream <name> {
//			url         <base url>     # such as https://api.openai.com/v1
//			weight      <n>            # default 1
//			priority    <n>            # fallback tier, 0 first; default 0
//			models      <pattern...>   # models it serves; default any
//			model_alias <client_model> <upstream_model>
//			auth        bearer|api-key # default bearer
//			header_up   [+|-]<field> [<value|regexp> [<replacement>]]
//			transport   http { ... }   # exactly as in reverse_proxy
//			rpm <n>  tpm <n>  rpd <n>  tpd <n>  max_concurrent <n>  burst <duration>
//			key <secret> [{
//				name        <id>
//				weight      <n>
//				limit_group <name>     # keys of one organisation share limits
//				rpm <n>  tpm <n>  rpd <n>  tpd <n>  max_concurrent <n>  burst <duration>
//			}]
//			keys_file <path>           # lines of `<secret> [weight=N] [name=X] [rpm=N] ...`
//		}
//
//		balance       least_loaded|weighted_round_robin|weighted_random
//		retries       <n>              # default 2
//		max_wait      <duration>       # default 30s
//		max_queue     <n>              # default 10000
//		cooldown      <duration>       # default 10s
//		probe_backoff <duration>       # first re-probe of a retired key; default 30s
//		max_body_size <size>           # default 32MiB
//		max_buffered  <size>           # request bodies held at once; default 1GiB (≥ 4 × max_body_size)
//		token_estimate chars|tokenizer # default chars
//		default_max_tokens <n>         # completion allowance without max tokens; default 0
//		price <model-pattern> <usd per 1M input> <usd per 1M output> [<usd per 1M cached input>]   # repeatable
//		objects       owned|shared     # default owned; see below
//
//		cache [memory|redis] {         # redis: in the state redis (shared)
//			ttl           <duration>       # default 1h
//			max_size      <size>           # default 256MiB
//			max_entry     <size>           # default 4MiB
//			scope         client|global    # default client
//			ignore_fields <field...>
//			paths         <path...>        # default chat/completions completions embeddings responses moderations
//			semantic {                     # similar, not only identical, chat requests
//				model     <embedding model> # default text-embedding-3-small
//				threshold <0..1>           # cosine similarity; default 0.95
//			}
//		}
//
//		websocket {                    # /v1/realtime and /v1/responses sessions
//			max_duration            <duration>  # default 1h
//			idle_timeout            <duration>  # default 10m
//			max_sessions_per_client <n>         # default none
//			max_sessions_per_key    <n>         # default none (each holds a max_concurrent slot)
//			max_message_size        <size>      # default 16MiB
//		}
//
//		state redis {                  # share state among instances (see StateConfig)
//			address  <host:port...>        # default 127.0.0.1:6379; several: Cluster
//			master   <name>                # Sentinel: the addresses are Sentinels
//			cluster                        # the addresses are Cluster nodes
//			username <name>
//			password <secret>              # {env.NAME} or {file./path}
//			db       <n>                   # default 0
//			tls                            # and tls_server_name, tls_insecure_skip_verify,
//			                               # tls_client_auth, tls_trusted_ca_certs
//			prefix   <string>              # default openai_relay
//			timeout  <duration>            # longest a request waits on Redis; default 50ms
//			dial_timeout <duration>        # default 1s
//			on_error local|reject          # when Redis is unreachable; default local
//		}
//	}
//
// The short form `upstream <name> <url> { ... }` gives the URL on the
// upstream line, and `upstream openai { key ... }` with no url means
// https://api.openai.com/v1.
//
// Stored objects (files, responses, batches, vector stores, ...) belong to
// the client whose request created them: another client naming one gets
// the API's 404, and lists show a client its own. With `objects owned` (the
// default) ids the relay never saw created are refused too; `objects
// shared`, in the relay block or in one client's, lets that client name
// them (objects made before the relay was put in front of the
// organisation), never another client's. A client's setting wins over the
// relay's.
func (rl *Relay) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "client":
			c, err := parseClient(d)
			if err != nil {
				return err
			}
			rl.Clients = append(rl.Clients, c)

		case "client_auth":
			var mode string
			if !d.Args(&mode) || d.NextArg() {
				return d.ArgErr()
			}
			if err := checkClientAuth(mode); err != nil || mode == "" {
				return d.Errf("client_auth: the only value is 'none' (clients authenticate with their keys unless it is said), got %q", mode)
			}
			rl.ClientAuth = mode

		case "upstream":
			u, err := parseUpstream(d)
			if err != nil {
				return err
			}
			rl.Upstreams = append(rl.Upstreams, u)

		case "retries":
			if rl.Retries != nil {
				return d.Err("retries already specified")
			}
			n, err := parseIntArg(d, 0)
			if err != nil {
				return err
			}
			rl.Retries = &n

		case "max_body_size":
			if rl.MaxBodySize != 0 {
				return d.Err("max_body_size already specified")
			}
			n, err := parseSizeArg(d)
			if err != nil {
				return err
			}
			rl.MaxBodySize = n

		case "max_buffered":
			if rl.MaxBuffered != 0 {
				return d.Err("max_buffered already specified")
			}
			n, err := parseSizeArg(d)
			if err != nil {
				return err
			}
			rl.MaxBuffered = n

		case "cooldown":
			if rl.Cooldown != 0 {
				return d.Err("cooldown already specified")
			}
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			rl.Cooldown = dur

		case "balance":
			if rl.Balance != "" {
				return d.Err("balance already specified")
			}
			if !d.Args(&rl.Balance) || d.NextArg() {
				return d.ArgErr()
			}
			if err := checkBalance(rl.Balance); err != nil {
				return d.Err(err.Error())
			}

		case "max_wait":
			if rl.MaxWait != 0 {
				return d.Err("max_wait already specified")
			}
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			rl.MaxWait = dur

		case "max_queue":
			if rl.MaxQueue != 0 {
				return d.Err("max_queue already specified")
			}
			n, err := parseIntArg(d, 1)
			if err != nil {
				return err
			}
			rl.MaxQueue = n

		case "token_estimate":
			if rl.TokenEstimate != "" {
				return d.Err("token_estimate already specified")
			}
			if !d.Args(&rl.TokenEstimate) || d.NextArg() {
				return d.ArgErr()
			}
			if err := checkTokenEstimate(rl.TokenEstimate); err != nil {
				return d.Err(err.Error())
			}

		case "price":
			args := d.RemainingArgs()
			if len(args) != 3 && len(args) != 4 {
				return d.Err("price takes a model pattern and the USD prices of a million input and output tokens, and optionally of cached input tokens: price gpt-4o* 2.50 10.00 1.25")
			}
			amounts := make([]float64, len(args)-1)
			for i, a := range args[1:] {
				v, err := strconv.ParseFloat(strings.TrimPrefix(a, "$"), 64)
				if err != nil {
					return d.Errf("price %s: %q must be a non-negative amount of USD", args[0], a)
				}
				amounts[i] = v
			}
			p := Price{Model: args[0], Input: amounts[0], Output: amounts[1]}
			if len(amounts) == 3 {
				p.CachedInput = &amounts[2]
			}
			if err := p.validate(); err != nil {
				return d.Err(err.Error())
			}
			rl.Prices = append(rl.Prices, p)

		case "websocket":
			if rl.WebSocket != nil {
				return d.Err("websocket already specified")
			}
			c, err := parseWebSocket(d)
			if err != nil {
				return err
			}
			rl.WebSocket = c

		case "cache":
			if rl.Cache != nil {
				return d.Err("cache already specified")
			}
			c, err := parseCache(d)
			if err != nil {
				return err
			}
			rl.Cache = c

		case "state":
			if rl.State != nil {
				return d.Err("state already specified")
			}
			st, err := parseState(d)
			if err != nil {
				return err
			}
			rl.State = st

		case "probe_backoff":
			if rl.ProbeBackoff != 0 {
				return d.Err("probe_backoff already specified")
			}
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			rl.ProbeBackoff = dur

		case "objects":
			if rl.Objects != "" {
				return d.Err("objects already specified")
			}
			v, err := parseObjectsArg(d)
			if err != nil {
				return err
			}
			rl.Objects = v

		case "default_max_tokens":
			if rl.DefaultMaxTokens != 0 {
				return d.Err("default_max_tokens already specified")
			}
			n, err := parseIntArg(d, 1)
			if err != nil {
				return err
			}
			rl.DefaultMaxTokens = int64(n)

		default:
			return d.Errf("unrecognized openai_relay option '%s'", d.Val())
		}
	}
	return nil
}

func parseClient(d *caddyfile.Dispenser) (*Client, error) {
	c := new(Client)
	if !d.Args(&c.Name) {
		return nil, d.Err("client needs a name: client <name> { key <secret> }")
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "key":
			keys := d.RemainingArgs()
			if len(keys) == 0 {
				return nil, d.ArgErr()
			}
			c.Keys = append(c.Keys, keys...)
		case "models":
			c.Models = append(c.Models, d.RemainingArgs()...)
			if len(c.Models) == 0 {
				return nil, d.ArgErr()
			}
		case "endpoints":
			c.Endpoints = append(c.Endpoints, d.RemainingArgs()...)
			if len(c.Endpoints) == 0 {
				return nil, d.ArgErr()
			}
		case "upstreams":
			c.Upstreams = append(c.Upstreams, d.RemainingArgs()...)
			if len(c.Upstreams) == 0 {
				return nil, d.ArgErr()
			}
		case "budget":
			if c.Budget != nil {
				return nil, d.Err("budget already specified")
			}
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return nil, d.Err("budget takes an amount in USD and optionally daily or monthly: budget 50 daily")
			}
			usd, err := strconv.ParseFloat(strings.TrimPrefix(args[0], "$"), 64)
			if err != nil {
				return nil, d.Errf("budget: %q is not a positive amount of USD", args[0])
			}
			c.Budget = &Budget{USD: usd}
			if len(args) == 2 {
				c.Budget.Period = args[1]
			}
			if err := checkBudget(c.Budget.USD, c.Budget.Period); err != nil {
				return nil, d.Err(err.Error())
			}
		case "priority":
			if !d.Args(&c.Priority) || d.NextArg() {
				return nil, d.ArgErr()
			}
			if err := checkPriority(c.Priority); err != nil {
				return nil, d.Err(err.Error())
			}
		case "objects":
			if c.Objects != "" {
				return nil, d.Err("objects already specified")
			}
			v, err := parseObjectsArg(d)
			if err != nil {
				return nil, err
			}
			c.Objects = v
		default:
			isLimit, err := parseLimit(d, &c.Limits)
			if err != nil {
				return nil, err
			}
			if !isLimit {
				return nil, d.Errf("unrecognized client option '%s'", d.Val())
			}
		}
	}
	if len(c.Keys) == 0 {
		return nil, d.Errf("client %s has no key: add `key <secret>` (such as {env.RELAY_KEY})", c.Name)
	}
	return c, nil
}

func parseUpstream(d *caddyfile.Dispenser) (*Upstream, error) {
	u := new(Upstream)
	if !d.Args(&u.Name) {
		return nil, d.Err("upstream needs a name: upstream <name> { url <url> key <secret> }")
	}
	if d.NextArg() {
		u.URL = d.Val()
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	var transport http.RoundTripper
	transportName := ""
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "url":
			if u.URL != "" {
				return nil, d.Err("url already specified")
			}
			if !d.Args(&u.URL) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "weight":
			n, err := parseIntArg(d, 1)
			if err != nil {
				return nil, err
			}
			u.Weight = n
		case "priority":
			n, err := parseIntArg(d, 0)
			if err != nil {
				return nil, err
			}
			u.Priority = n
		case "models":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			u.Models = append(u.Models, args...)
		case "model_alias":
			var from, to string
			if !d.Args(&from, &to) || d.NextArg() {
				return nil, d.Err("model_alias takes two arguments: <client_model> <upstream_model>")
			}
			if u.ModelAliases == nil {
				u.ModelAliases = make(map[string]string)
			}
			if _, dup := u.ModelAliases[from]; dup {
				return nil, d.Errf("model_alias for %q already specified", from)
			}
			u.ModelAliases[from] = to
		case "auth":
			if !d.Args(&u.Auth) || d.NextArg() {
				return nil, d.ArgErr()
			}
			if err := checkAuth(u.Auth); err != nil {
				return nil, d.Err(err.Error())
			}
		case "header_up":
			if u.HeaderUp == nil {
				u.HeaderUp = new(headers.HeaderOps)
			}
			if err := parseHeaderOp(d, u.HeaderUp); err != nil {
				return nil, err
			}
		case "transport":
			if transport != nil {
				return nil, d.Err("transport already specified")
			}
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			transportName = d.Val()
			modID := "http.reverse_proxy.transport." + transportName
			unm, err := caddyfile.UnmarshalModule(d, modID)
			if err != nil {
				return nil, err
			}
			rt, ok := unm.(http.RoundTripper)
			if !ok {
				return nil, d.Errf("module %s (%T) is not a RoundTripper", modID, unm)
			}
			transport = rt
		case "key":
			k, err := parseKey(d)
			if err != nil {
				return nil, err
			}
			u.Keys = append(u.Keys, k)
		case "keys_file":
			if u.KeysFile != "" {
				return nil, d.Err("keys_file already specified")
			}
			if !d.Args(&u.KeysFile) || d.NextArg() {
				return nil, d.ArgErr()
			}
		default:
			isLimit, err := parseLimit(d, &u.Limits)
			if err != nil {
				return nil, err
			}
			if !isLimit {
				return nil, d.Errf("unrecognized upstream option '%s'", d.Val())
			}
		}
	}
	if len(u.Keys) == 0 && u.KeysFile == "" {
		return nil, d.Errf("upstream %s has no key: add `key <secret>` (such as {env.OPENAI_API_KEY}) or keys_file", u.Name)
	}
	// As reverse_proxy does: an https upstream switches TLS on in the
	// transport it configures so that its tls_* options take effect. An
	// upstream without a transport block gets its default in Provision
	// (Upstream.loadTransport), as one configured in JSON does.
	target := cmp.Or(u.URL, defaultUpstreamURL)
	if parsed, err := url.Parse(target); err == nil && parsed.Scheme == "https" && transport != nil {
		if tt, ok := transport.(reverseproxy.TLSTransport); ok && !tt.TLSEnabled() {
			if err := tt.EnableTLS(new(reverseproxy.TLSConfig)); err != nil {
				return nil, d.Errf("upstream %s: enabling TLS: %v", u.Name, err)
			}
		}
	}
	if transport != nil {
		u.TransportRaw = caddyconfig.JSONModuleObject(transport, "protocol", transportName, nil)
	}
	return u, nil
}

func parseKey(d *caddyfile.Dispenser) (*Key, error) {
	k := new(Key)
	if !d.Args(&k.Key) {
		return nil, d.Err("key needs a secret: key <secret>, such as {env.OPENAI_API_KEY}")
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "name":
			if !d.Args(&k.Name) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "weight":
			n, err := parseIntArg(d, 1)
			if err != nil {
				return nil, err
			}
			k.Weight = n
		case "limit_group":
			if !d.Args(&k.LimitGroup) || d.NextArg() {
				return nil, d.ArgErr()
			}
		default:
			isLimit, err := parseLimit(d, &k.Limits)
			if err != nil {
				return nil, err
			}
			if !isLimit {
				return nil, d.Errf("unrecognized key option '%s'", d.Val())
			}
		}
	}
	return k, nil
}

func parseCache(d *caddyfile.Dispenser) (*CacheConfig, error) {
	c := new(CacheConfig)
	if d.NextArg() {
		c.Store = d.Val()
		if err := checkCacheStore(c.Store); err != nil {
			return nil, d.Err(err.Error())
		}
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "ttl":
			dur, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			c.TTL = dur
		case "max_size":
			n, err := parseSizeArg(d)
			if err != nil {
				return nil, err
			}
			c.MaxSize = n
		case "max_entry":
			n, err := parseSizeArg(d)
			if err != nil {
				return nil, err
			}
			c.MaxEntry = n
		case "scope":
			if !d.Args(&c.Scope) || d.NextArg() {
				return nil, d.ArgErr()
			}
			if err := checkCacheScope(c.Scope); err != nil {
				return nil, d.Err(err.Error())
			}
		case "ignore_fields":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			c.IgnoreFields = append(c.IgnoreFields, args...)
		case "paths":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			c.Paths = append(c.Paths, args...)
		case "semantic":
			if c.Semantic != nil {
				return nil, d.Err("semantic already specified")
			}
			c.Semantic = new(SemanticConfig)
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "model":
					if !d.Args(&c.Semantic.Model) || d.NextArg() {
						return nil, d.ArgErr()
					}
				case "threshold":
					var v string
					if !d.Args(&v) || d.NextArg() {
						return nil, d.ArgErr()
					}
					f, err := strconv.ParseFloat(v, 64)
					if err != nil || f == 0 {
						return nil, d.Errf("%v, got %q", errThreshold, v)
					}
					if err := checkThreshold(f); err != nil {
						return nil, d.Err(err.Error())
					}
					c.Semantic.Threshold = f
				default:
					return nil, d.Errf("unrecognized semantic option '%s'", d.Val())
				}
			}
		default:
			return nil, d.Errf("unrecognized cache option '%s'", d.Val())
		}
	}
	return c, nil
}

// parseLimit reads a limit option (rpm, tpm, rpd, tpd, max_concurrent,
// burst) into l, and reports whether the option was one.
func parseLimit(d *caddyfile.Dispenser, l *Limits) (bool, error) {
	var target *int64
	switch d.Val() {
	case "rpm":
		target = &l.RPM
	case "tpm":
		target = &l.TPM
	case "rpd":
		target = &l.RPD
	case "tpd":
		target = &l.TPD
	case "max_concurrent":
		target = &l.MaxConcurrent
	case "burst":
		dur, err := parseDurationArg(d)
		if err != nil {
			return true, err
		}
		l.Burst = dur
		return true, nil
	default:
		return false, nil
	}
	if *target != 0 {
		return true, d.Errf("%s already specified", d.Val())
	}
	n, err := parseIntArg(d, 1)
	if err != nil {
		return true, err
	}
	*target = int64(n)
	return true, nil
}

// parseHeaderOp reads `[+|-]<field> [<value|regexp> [<replacement>]]` as
// reverse_proxy's header_up does.
func parseHeaderOp(d *caddyfile.Dispenser, ops *headers.HeaderOps) error {
	args := d.RemainingArgs()
	var err error
	switch len(args) {
	case 1:
		err = headers.CaddyfileHeaderOp(ops, args[0], "", nil)
	case 2:
		err = headers.CaddyfileHeaderOp(ops, args[0], args[1], nil)
	case 3:
		err = headers.CaddyfileHeaderOp(ops, args[0], args[1], &args[2])
	default:
		return d.ArgErr()
	}
	if err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parseObjectsArg reads the argument of `objects owned|shared`.
func parseObjectsArg(d *caddyfile.Dispenser) (string, error) {
	var v string
	if !d.Args(&v) || d.NextArg() {
		return "", d.Err("objects takes one argument: owned or shared")
	}
	if v != objectsOwned && v != objectsShared {
		return "", d.Errf("objects must be owned or shared, got %q", v)
	}
	return v, nil
}

// parseIntArg reads the one integer argument of the current option, which
// must be at least minimum.
func parseIntArg(d *caddyfile.Dispenser, minimum int) (int, error) {
	option := d.Val()
	var s string
	if !d.Args(&s) || d.NextArg() {
		return 0, d.Errf("%s takes one argument: an integer", option)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, d.Errf("%s: %q is not an integer", option, s)
	}
	if n < minimum {
		return 0, d.Errf("%s must be at least %d, got %d", option, minimum, n)
	}
	return n, nil
}

// parseSizeArg reads a byte size such as 32MiB or 10MB.
func parseSizeArg(d *caddyfile.Dispenser) (int64, error) {
	option := d.Val()
	var s string
	if !d.Args(&s) || d.NextArg() {
		return 0, d.Errf("%s takes one argument: a size such as 32MiB", option)
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<40 {
		return 0, d.Errf("%s: %q is not a size such as 32MiB", option, s)
	}
	return int64(n), nil
}

// parseDurationArg reads a duration such as 10s or 1m30s.
func parseDurationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	option := d.Val()
	var s string
	if !d.Args(&s) || d.NextArg() {
		return 0, d.Errf("%s takes one argument: a duration such as 10s", option)
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s: %q is not a positive duration such as 10s", option, s)
	}
	return caddy.Duration(dur), nil
}
