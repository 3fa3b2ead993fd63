package openairelay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadKeysFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	content := "# org A\nsk-one-aaaaaaaaaaaa weight=3 rpm=500 tpm=30000 limit_group=orgA\n\n  sk-two-bbbbbbbbbbbb name=second rpd=100 tpd=5000 max_concurrent=4\nsk-three-cccccccccc\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := readKeysFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("%d keys", len(keys))
	}
	if k := keys[0]; k.Key != "sk-one-aaaaaaaaaaaa" || k.Weight != 3 || k.RPM != 500 || k.TPM != 30000 || k.LimitGroup != "orgA" {
		t.Errorf("first key %+v", k)
	}
	if k := keys[1]; k.Name != "second" || k.RPD != 100 || k.TPD != 5000 || k.MaxConcurrent != 4 {
		t.Errorf("second key %+v", k)
	}
	for _, bad := range []string{"sk-x weight=0\n", "sk-x rpm=lots\n", "sk-x colour=red\n", "sk-x weight\n"} {
		if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readKeysFile(file); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A line in the wrong order: the error must not quote the secret.
	const secret = "sk-proj-secret-0123456789abcdef"
	for _, bad := range []string{"weight=2 " + secret + "\n", "sk-x weight=2 " + secret + "\n", "sk-x rpm=" + secret + "\n"} {
		if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readKeysFile(file)
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "secret-0123") {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
}

func TestKeyFingerprint(t *testing.T) {
	tests := map[string]string{
		"sk-proj-abcdefghijklmnopqrstuvwxyz": "sk-…wxyz",
		"0123456789abcdef0123456789abcdef":   "…cdef",
		"short":                              "key-",
	}
	for secret, want := range tests {
		got := keyFingerprint(secret)
		if want == "key-" {
			if len(got) != len("key-")+6 || got[:4] != "key-" {
				t.Errorf("keyFingerprint(%q) = %q", secret, got)
			}
			continue
		}
		if got != want {
			t.Errorf("keyFingerprint(%q) = %q; want %q", secret, got, want)
		}
	}
}

// TestRoute checks which upstreams, by tier, a request may use: the client's
// upstream list, the upstreams' model patterns and aliases, and priorities.
func TestRoute(t *testing.T) {
	openai := &Upstream{Name: "openai", index: 0, Weight: 1, Models: []string{"gpt-*", "text-embedding-*"}}
	azure := &Upstream{Name: "azure", index: 1, Weight: 1, Priority: 1, Models: []string{"gpt-4o"}, ModelAliases: map[string]string{"gpt-4o-mini": "mini-deployment"}}
	local := &Upstream{Name: "local", index: 2, Weight: 1, Priority: 2}
	rl := &Relay{tiers: []*tier{
		{priority: 0, upstreams: []*Upstream{openai}},
		{priority: 1, upstreams: []*Upstream{azure}},
		{priority: 2, upstreams: []*Upstream{local}},
	}}
	all := &Client{Name: "all"}
	onlyAzure := &Client{Name: "azure-only", allowed: upstreamSet{false, true, false}}
	tests := []struct {
		client *Client
		model  string
		want   []string
	}{
		{all, "gpt-4o", []string{"openai", "azure", "local"}},
		{all, "gpt-4o-mini", []string{"openai", "azure", "local"}}, // azure by its alias
		{all, "claude-3", []string{"local"}},
		{all, "", []string{"openai", "azure", "local"}},
		{onlyAzure, "gpt-4o", []string{"azure"}},
		{onlyAzure, "text-embedding-3-small", nil},
	}
	for _, tt := range tests {
		rs := rl.eligible(tt.client, tt.model)
		var got []string
		for ti, tr := range rs.tiers {
			for ui, u := range tr.upstreams {
				if rs.eligible[ti][ui] {
					got = append(got, u.Name)
				}
			}
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s/%q: %v; want %v", tt.client.Name, tt.model, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s/%q: %v; want %v", tt.client.Name, tt.model, got, tt.want)
			}
		}
	}
	if azure.upstreamModel("gpt-4o-mini") != "mini-deployment" || azure.upstreamModel("gpt-4o") != "gpt-4o" {
		t.Error("aliases")
	}
}
