package openairelay

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestProvisionRefuses checks configurations that adapt but must not load,
// as `caddy validate` would report them.
func TestProvisionRefuses(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	tests := []struct{ name, client, want string }{
		{"a short client key", "key short", "too short"},
		{"a bad endpoint pattern", "key rk-long-enough-key\n\t\t\tendpoints files[", "not a valid glob"},
		{"a bad model pattern", "key rk-long-enough-key\n\t\t\tmodels gpt-[", "not a valid glob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caddyfile := ":0 {\n\topenai_relay {\n\t\tclient app {\n\t\t\t" + tt.client + "\n\t\t}\n\t\tupstream u http://127.0.0.1:1/v1 {\n\t\t\tkey sk-test-0123456789\n\t\t}\n\t}\n}\n"
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(&cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate: %v; want an error saying %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "sk-test-0123456789") {
				t.Errorf("the error quotes an upstream key: %v", err)
			}
		})
	}
}

// TestJSONDefaultsAsCaddyfile checks that hand-written JSON gets the
// defaults the Caddyfile gets: an upstream with keys only is
// https://api.openai.com/v1 through the default transport, and the adapted
// Caddyfile spells out neither.
func TestJSONDefaultsAsCaddyfile(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	handler := `{"handler":"openai_relay","client_auth":"none","upstreams":[{"name":"openai","keys":[{"key":"sk-test-0123456789"}]}]}`
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[` + handler + `]}]}}}}}`
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("an upstream without url or transport: %v", err)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":0 {\n\topenai_relay {\n\t\tclient_auth none\n\t\tupstream openai {\n\t\t\tkey sk-test-0123456789\n\t\t}\n\t}\n}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `"transport"`) || strings.Contains(string(out), `"url"`) {
		t.Errorf("the adapted Caddyfile spells out defaults Provision applies: %s", out)
	}
}

// TestOneMessagePerBadValue checks that a bad value gets the same message
// from the Caddyfile parser and from Provision of hand-written JSON: both
// call one validator.
func TestOneMessagePerBadValue(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	const up = `{"name":"o","url":"http://127.0.0.1:1/v1","keys":[{"key":"sk-test-0123456789"}]`
	tests := []struct {
		name, caddyfile, handler, want string
	}{
		{"balance", "balance fastest", `"client_auth":"none","balance":"fastest","upstreams":[` + up + `}]`, `balance must be least_loaded, weighted_round_robin or weighted_random, got "fastest"`},
		{"token_estimate", "token_estimate guess", `"client_auth":"none","token_estimate":"guess","upstreams":[` + up + `}]`, `token_estimate must be chars or tokenizer, got "guess"`},
		{"auth", "upstream o http://127.0.0.1:1/v1 {\n\t\t\tauth basic\n\t\t\tkey sk-test-0123456789\n\t\t}", `"client_auth":"none","upstreams":[` + up + `,"auth":"basic"}]`, `auth must be 'bearer' or 'api-key', got "basic"`},
		{"priority", "client c {\n\t\t\tkey rk-long-enough-key\n\t\t\tpriority urgent\n\t\t}", `"clients":[{"name":"c","keys":["rk-long-enough-key"],"priority":"urgent"}],"upstreams":[` + up + `}]`, `priority must be high, normal or low, got "urgent"`},
		{"cache scope", "cache {\n\t\t\tscope world\n\t\t}", `"client_auth":"none","cache":{"scope":"world"},"upstreams":[` + up + `}]`, `cache scope must be client or global, got "world"`},
		{"budget period", "client c {\n\t\t\tkey rk-long-enough-key\n\t\t\tbudget 5 weekly\n\t\t}", `"clients":[{"name":"c","keys":["rk-long-enough-key"],"budget":{"usd":5,"period":"weekly"}}],"upstreams":[` + up + `}]`, `budget period must be daily or monthly, got "weekly"`},
		{"budget amount", "client c {\n\t\t\tkey rk-long-enough-key\n\t\t\tbudget -5\n\t\t}", `"clients":[{"name":"c","keys":["rk-long-enough-key"],"budget":{"usd":-5}}],"upstreams":[` + up + `}]`, `budget must be a positive amount of USD, got -5`},
		{"semantic threshold", "cache {\n\t\t\tsemantic {\n\t\t\t\tthreshold 1.5\n\t\t\t}\n\t\t}", `"client_auth":"none","cache":{"semantic":{"threshold":1.5}},"upstreams":[` + up + `}]`, `semantic threshold must be a number above 0 and at most 1, got 1.5`},
		{"price", "price gpt-4o* 2.5 -1", `"client_auth":"none","prices":[{"model":"gpt-4o*","input":2.5,"output":-1}],"upstreams":[` + up + `}]`, `price gpt-4o*: -1 must be a non-negative amount of USD`},
		{"cache store", "cache disk", `"client_auth":"none","cache":{"store":"disk"},"upstreams":[` + up + `}]`, `cache store "disk" is not available: use memory or redis`},
		{"state on_error", "state redis {\n\t\t\ton_error retry\n\t\t}", `"client_auth":"none","state":{"store":"redis","on_error":"retry"},"upstreams":[` + up + `}]`, `on_error must be local or reject, got "retry"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caddyfile := ":0 {\n\topenai_relay {\n\t\tclient_auth none\n\t\t" + tt.caddyfile + "\n\t\tupstream x http://127.0.0.1:1/v1 {\n\t\t\tkey sk-test-0123456789\n\t\t}\n\t}\n}\n"
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Caddyfile: %v; want %q", err, tt.want)
			}
			cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[{"handler":"openai_relay",` + tt.handler + `}]}]}}}}}`
			var c caddy.Config
			if err := json.Unmarshal([]byte(cfg), &c); err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("JSON: %v; want %q", err, tt.want)
			}
		})
	}
}

// TestCacheRedisNeedsState checks that `cache redis` without `state redis`
// is refused with a message that says what to add.
func TestCacheRedisNeedsState(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[{"handler":"openai_relay","client_auth":"none","cache":{"store":"redis"},` +
		`"upstreams":[{"name":"o","url":"http://127.0.0.1:1/v1","keys":[{"key":"sk-test-0123456789"}]}]}]}]}}}}}`
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(&c)
	if err == nil || !strings.Contains(err.Error(), "add `state redis") {
		t.Fatalf("validate: %v", err)
	}
}
