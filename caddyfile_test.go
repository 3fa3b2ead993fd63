package openairelay

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the expected output of golden tests")

// TestCaddyfileAdapt adapts every testdata/caddyfile/*.caddyfiletest file: a
// Caddyfile, a line of dashes, then the expected JSON, or `error: <text>`
// when adapting must fail with a message containing text.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	const sep = "\n----------\n"
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), sep)
			if !ok {
				t.Fatalf("%s: no separator line", file)
			}
			adapter := caddyconfig.GetAdapter("caddyfile")
			out, _, err := adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			if wantErr, isErr := strings.CutPrefix(strings.TrimSpace(expected), "error: "); isErr {
				if err == nil {
					t.Fatalf("adapting succeeded; want an error containing %q", wantErr)
				}
				if !strings.Contains(err.Error(), wantErr) {
					t.Fatalf("error %q does not contain %q", err, wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got := pretty.String() + "\n"
			if *update {
				if err := os.WriteFile(file, []byte(input+sep+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != expected {
				t.Errorf("adapted JSON differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", got, expected)
			}
		})
	}
}

// TestUnmarshalCaddyfileErrors checks the parser's own messages, with the
// position Caddy adds to them.
func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"argument on directive", `openai_relay foo`, "wrong argument count"},
		{"unknown option", "openai_relay {\n\tfrobnicate\n}", "unrecognized openai_relay option 'frobnicate'"},
		{"client without name", "openai_relay {\n\tclient {\n\t\tkey x\n\t}\n}", "client needs a name"},
		{"client without key", "openai_relay {\n\tclient app {\n\t\tmodels gpt-*\n\t}\n}", "client app has no key"},
		{"client unknown option", "openai_relay {\n\tclient app {\n\t\tkey k\n\t\tcolour red\n\t}\n}", "unrecognized client option 'colour'"},
		{"client_auth other", "openai_relay {\n\tclient_auth basic\n}", "the only value is 'none'"},
		{"upstream without key", "openai_relay {\n\tupstream openai {\n\t\turl https://api.openai.com/v1\n\t}\n}", "upstream openai has no key"},
		{"bad weight", "openai_relay {\n\tupstream o {\n\t\tweight zero\n\t\tkey k\n\t}\n}", `weight: "zero" is not an integer`},
		{"weight too small", "openai_relay {\n\tupstream o {\n\t\tweight 0\n\t\tkey k\n\t}\n}", "weight must be at least 1"},
		{"bad auth", "openai_relay {\n\tupstream o {\n\t\tauth basic\n\t\tkey k\n\t}\n}", "auth must be 'bearer' or 'api-key'"},
		{"alias args", "openai_relay {\n\tupstream o {\n\t\tmodel_alias a\n\t\tkey k\n\t}\n}", "model_alias takes two arguments"},
		{"duplicate alias", "openai_relay {\n\tupstream o {\n\t\tmodel_alias a b\n\t\tmodel_alias a c\n\t\tkey k\n\t}\n}", `model_alias for "a" already specified`},
		{"key option", "openai_relay {\n\tupstream o {\n\t\tkey k {\n\t\t\tcolour red\n\t\t}\n\t}\n}", "unrecognized key option 'colour'"},
		{"retries twice", "openai_relay {\n\tretries 1\n\tretries 2\n}", "retries already specified"},
		{"websocket twice", "openai_relay {\n\twebsocket\n\twebsocket\n}", "websocket already specified"},
		{"websocket option twice", "openai_relay {\n\twebsocket {\n\t\tidle_timeout 1m\n\t\tidle_timeout 2m\n\t}\n}", "websocket: idle_timeout already specified"},
		{"websocket unknown option", "openai_relay {\n\twebsocket {\n\t\tcolour red\n\t}\n}", `websocket: unrecognized option "colour"`},
		{"websocket bad size", "openai_relay {\n\twebsocket {\n\t\tmax_sessions_per_key 0\n\t}\n}", "max_sessions_per_key"},
		{"state store", "openai_relay {\n\tstate memcached {\n\t}\n}", `state store "memcached" is not available: use redis`},
		{"state without store", "openai_relay {\n\tstate {\n\t\taddress a:1\n\t}\n}", "state takes the store"},
		{"state on_error", "openai_relay {\n\tstate redis {\n\t\ton_error retry\n\t}\n}", `on_error must be local or reject, got "retry"`},
		{"state db", "openai_relay {\n\tstate redis {\n\t\tdb two\n\t}\n}", `db: "two" is not a database number`},
		{"state option", "openai_relay {\n\tstate redis {\n\t\tcolour red\n\t}\n}", "unrecognized state option 'colour'"},
		{"state twice", "openai_relay {\n\tstate redis\n\tstate redis\n}", "state already specified"},
		{"retries negative", "openai_relay {\n\tretries -1\n}", "retries must be at least 0"},
		{"bad size", "openai_relay {\n\tmax_body_size lots\n}", `max_body_size: "lots" is not a size`},
		{"bad duration", "openai_relay {\n\tcooldown soon\n}", `cooldown: "soon" is not a positive duration`},
		{"unknown transport", "openai_relay {\n\tupstream o {\n\t\ttransport carrier_pigeon\n\t\tkey k\n\t}\n}", "carrier_pigeon"},
		{"url twice", "openai_relay {\n\tupstream o https://a/v1 {\n\t\turl https://b/v1\n\t\tkey k\n\t}\n}", "url already specified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tt.input)
			err := new(Relay).UnmarshalCaddyfile(d)
			if err == nil {
				t.Fatalf("no error; want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("error %q does not say where", err)
			}
		})
	}
}
