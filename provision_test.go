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
