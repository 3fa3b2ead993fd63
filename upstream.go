package openairelay

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Upstream is one OpenAI-compatible API and the keys the relay may use on it.
type Upstream struct {
	// Name identifies the upstream in client allow-lists, placeholders,
	// metrics and the admin API. Default: "upstream" followed by its index,
	// starting at 0, in the order configured.
	Name string `json:"name,omitempty"`

	// URL is the API base, such as https://api.openai.com/v1. The client's
	// path after /v1 is appended to it, and its query string kept. Default:
	// https://api.openai.com/v1.
	URL string `json:"url,omitempty"`

	// Weight is this upstream's share of traffic among the upstreams of the
	// same priority. Default: 1.
	Weight int `json:"weight,omitempty"`

	// Priority is the fallback tier: 0 is used first, and a higher tier only
	// when no key of the lower tiers is able to serve. Default: 0.
	Priority int `json:"priority,omitempty"`

	// Models lists the models this upstream serves, as path.Match glob
	// patterns matched against the model the client asks for. Default: any.
	Models []string `json:"models,omitempty"`

	// ModelAliases maps a model name clients use to the name this upstream
	// knows it by, such as an Azure deployment. The request body's model is
	// rewritten on the way out. Default: none.
	ModelAliases map[string]string `json:"model_aliases,omitempty"`

	// Auth is how the key is sent: "bearer" (Authorization: Bearer <key>) or
	// "api-key" (api-key: <key>, as Azure OpenAI expects). Default: "bearer".
	Auth string `json:"auth,omitempty"`

	// HeaderUp changes the request headers sent to this upstream, after the
	// relay set the key's auth header. Placeholders are evaluated per
	// request. Default: no change.
	HeaderUp *headers.HeaderOps `json:"header_up,omitempty"`

	// TransportRaw configures how the upstream is reached, exactly as
	// reverse_proxy's transport: TLS, HTTP versions, timeouts, proxies.
	// Default: the http transport, with TLS when the URL is https.
	TransportRaw json.RawMessage `json:"transport,omitempty" caddy:"namespace=http.reverse_proxy.transport inline_key=protocol"`

	// Keys are the upstream API keys. At least one key, here or in
	// KeysFile, is required.
	Keys []*Key `json:"keys,omitempty"`

	// KeysFile names a file read at provision time, one key per line:
	// `<secret> [weight=N] [name=ID] [rpm=N] [tpm=N] [rpd=N] [tpd=N]
	// [max_concurrent=N] [limit_group=NAME]`. Empty lines and lines starting
	// with # are skipped. Default: none.
	KeysFile string `json:"keys_file,omitempty"`

	// Limits are the default limits of every key of this upstream; each
	// key may override them. Default: none (learned from the upstream's
	// x-ratelimit-* headers).
	Limits

	base      *url.URL
	transport http.RoundTripper
	index     int // position in Relay.Upstreams, for bitsets of allowed upstreams
}

// Key is one upstream API key.
type Key struct {
	// Key is the secret, normally written as a runtime placeholder such as
	// {env.OPENAI_API_KEY} or {file./run/secrets/openai} so that it is
	// resolved in Provision and never stored in Caddy's config. Required.
	Key string `json:"key"`

	// Name identifies the key in logs, metrics, placeholders and the admin
	// API. Default: a fingerprint of the secret such as `sk-…a1b2`.
	Name string `json:"name,omitempty"`

	// Weight is the key's share among the keys of its upstream. Default: 1.
	Weight int `json:"weight,omitempty"`

	// LimitGroup names a set of limits shared by the keys of one upstream
	// that carry the same group: OpenAI limits an organisation, not a key,
	// so several keys of one organisation share one budget. The group's
	// limits are those set on its keys (they must not disagree) or the
	// upstream's. Default: none (the key has limits of its own).
	LimitGroup string `json:"limit_group,omitempty"`

	// Limits are this key's limits; unset ones come from the upstream.
	Limits
}

// provision resolves the upstream's URL, transport and keys.
func (u *Upstream) provision(ctx caddy.Context, index int, repl *caddy.Replacer) error {
	u.index = index
	if u.Name == "" {
		u.Name = "upstream" + strconv.Itoa(index)
	}
	if u.URL == "" {
		u.URL = defaultUpstreamURL
	}
	base, err := url.Parse(repl.ReplaceKnown(u.URL, ""))
	if err != nil {
		return fmt.Errorf("upstream %s: url: %v", u.Name, err)
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("upstream %s: url %q must be absolute, with scheme http or https", u.Name, u.URL)
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return fmt.Errorf("upstream %s: url %q must not have a query or fragment", u.Name, u.URL)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawPath = ""
	u.base = base

	if u.Weight < 0 || u.Weight == 0 {
		if u.Weight < 0 {
			return fmt.Errorf("upstream %s: weight must be positive", u.Name)
		}
		u.Weight = 1
	}
	if u.Priority < 0 {
		return fmt.Errorf("upstream %s: priority must not be negative", u.Name)
	}
	for _, pattern := range u.Models {
		if _, err := path.Match(pattern, ""); err != nil {
			return fmt.Errorf("upstream %s: model pattern %q: %v", u.Name, pattern, err)
		}
	}
	if err := checkAuth(u.Auth); err != nil {
		return fmt.Errorf("upstream %s: %v", u.Name, err)
	}
	if u.Auth == "" {
		u.Auth = authBearer
	}
	if u.HeaderUp != nil {
		if err := u.HeaderUp.Provision(ctx); err != nil {
			return fmt.Errorf("upstream %s: header_up: %v", u.Name, err)
		}
	}
	if err := u.loadTransport(ctx); err != nil {
		return fmt.Errorf("upstream %s: %v", u.Name, err)
	}
	if u.KeysFile != "" {
		fileKeys, err := readKeysFile(repl.ReplaceKnown(u.KeysFile, ""))
		if err != nil {
			return fmt.Errorf("upstream %s: keys_file: %v", u.Name, err)
		}
		u.Keys = append(u.Keys, fileKeys...)
	}
	if len(u.Keys) == 0 {
		return fmt.Errorf("upstream %s: at least one key is required", u.Name)
	}
	return nil
}

// defaultUpstreamURL is the URL of an upstream that names none.
const defaultUpstreamURL = "https://api.openai.com/v1"

const (
	authBearer = "bearer"
	authAPIKey = "api-key"

	// defaultIdleConnsPerHost is the idle connections kept per upstream
	// host by the transports the relay makes itself.
	defaultIdleConnsPerHost = "256"

	// defaultResponseHeaderTimeout bounds the wait for an upstream's answer
	// in the transports the relay makes itself.
	defaultResponseHeaderTimeout = "10m"
)

func (u *Upstream) loadTransport(ctx caddy.Context) error {
	if u.TransportRaw == nil {
		// reverse_proxy's default, the http transport (with TLS switched on
		// for an https upstream so that TLS settings apply), but keeping
		// more idle connections: all of a relay's traffic goes to a few
		// hosts, and with Caddy's 32 a busy relay would close and redial
		// (TLS included) connections all the time.
		// A response header timeout too: an upstream that hangs would hold
		// the request's reservation until its client gives up. Ten minutes,
		// the official SDKs' own timeout, since a non-stream answer of a
		// reasoning model sends its header only when it is done.
		common := `"keep_alive":{"max_idle_conns_per_host":` + defaultIdleConnsPerHost + `},"response_header_timeout":"` + defaultResponseHeaderTimeout + `"`
		raw := json.RawMessage(`{` + common + `}`)
		if u.base.Scheme == "https" {
			raw = json.RawMessage(`{` + common + `,"tls":{}}`)
		}
		mod, err := ctx.LoadModuleByID("http.reverse_proxy.transport.http", raw)
		if err != nil {
			return fmt.Errorf("loading default transport: %v", err)
		}
		u.transport = mod.(http.RoundTripper)
		return nil
	}
	mod, err := ctx.LoadModule(u, "TransportRaw")
	if err != nil {
		return fmt.Errorf("loading transport: %v", err)
	}
	rt, ok := mod.(http.RoundTripper)
	if !ok {
		return fmt.Errorf("transport module %T is not an http.RoundTripper", mod)
	}
	u.transport = rt
	return nil
}

// serves reports whether the upstream serves the model the client asked for.
// An empty model (GET /v1/models, files, ...) is served by every upstream.
func (u *Upstream) serves(model string) bool {
	if model == "" || len(u.Models) == 0 {
		return true
	}
	if _, ok := u.ModelAliases[model]; ok {
		return true
	}
	return matchAny(u.Models, model)
}

// upstreamModel is the model name the upstream knows the client's model by.
func (u *Upstream) upstreamModel(model string) string {
	if alias, ok := u.ModelAliases[model]; ok {
		return alias
	}
	return model
}

// matchAny reports whether s matches one of the glob patterns.
func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// readKeysFile reads `<secret> [weight=N] [name=X]` lines.
func readKeysFile(filename string) ([]*Key, error) {
	data, err := os.ReadFile(filename)
	if err != nil {
		return nil, err
	}
	var keys []*Key
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		// Errors never quote a field: a line written in another order
		// than expected may hold its secret anywhere.
		if isKeyOption(fields[0]) {
			return nil, fmt.Errorf("%s:%d: the line starts with an option; the key must come first", filename, line)
		}
		k := &Key{Key: fields[0]}
		for i, opt := range fields[1:] {
			name, value, ok := strings.Cut(opt, "=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: field %d is not name=value (the key comes first, then its options)", filename, line, i+2)
			}
			if err := k.setOption(name, value); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", filename, line, err)
			}
		}
		keys = append(keys, k)
	}
	return keys, sc.Err()
}

// keyOptionNames are the options of a keys file line.
var keyOptionNames = []string{"name", "weight", "rpm", "tpm", "rpd", "tpd", "max_concurrent", "limit_group"}

// isKeyOption reports whether a field of a keys file line is an option.
func isKeyOption(field string) bool {
	name, _, ok := strings.Cut(field, "=")
	return ok && slices.Contains(keyOptionNames, name)
}

// setOption sets a key option given as name=value in a keys file.
func (k *Key) setOption(name, value string) error {
	if name == "name" {
		k.Name = value
		return nil
	}
	if name == "limit_group" {
		k.LimitGroup = value
		return nil
	}
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil || n < 0 || (name == "weight" && n == 0) {
		return fmt.Errorf("%s must be a positive integer", name)
	}
	switch name {
	case "weight":
		k.Weight = int(n)
	case "rpm":
		k.RPM = n
	case "tpm":
		k.TPM = n
	case "rpd":
		k.RPD = n
	case "tpd":
		k.TPD = n
	case "max_concurrent":
		k.MaxConcurrent = n
	default:
		return fmt.Errorf("unknown option %q", name)
	}
	return nil
}

// keyFingerprint names a key without revealing it: the prefix up to its first
// dash (as in `sk-`), an ellipsis and the last four characters. Short keys
// show only a hash prefix.
func keyFingerprint(secret string) string {
	if len(secret) < 12 {
		sum := sha256.Sum256([]byte(secret))
		return "key-" + hex.EncodeToString(sum[:3])
	}
	prefix := ""
	if i := strings.IndexByte(secret, '-'); i > 0 && i <= 4 {
		prefix = secret[:i+1]
	}
	return prefix + "…" + secret[len(secret)-4:]
}

// Interface guard: referencing the reverseproxy package registers the
// http.reverse_proxy.transport.http module the default transport loads.
var _ http.RoundTripper = (*reverseproxy.HTTPTransport)(nil)
