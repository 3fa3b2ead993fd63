package openairelay_test

import (
	"context"
	"testing"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// TestNodeSDKAgainstFake runs the Node SDK's clients straight against the
// fake: the harness works, and the fake speaks what the SDK expects (its
// event names and usage fields are the reference), so that the relay's
// tests below stand on a faithful upstream.
func TestNodeSDKAgainstFake(t *testing.T) {
	nodeSDK(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	key := "sk-node-fake-0123456789abcdef"
	fake.AddKey(key, fakeopenai.KeyLimits{})
	base := map[string]string{"OPENAI_BASE_URL": fake.URL(), "OPENAI_API_KEY": key, "TURNS": "2"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, script string
		env          map[string]string
		final        string
	}{
		{"realtime GA", "realtime.mjs", with("MODEL", "gpt-realtime"), "response.done"},
		{"realtime beta", "realtime.mjs", with("MODEL", "gpt-realtime", "BETA", "1"), "response.done"},
		{"realtime subprotocol", "realtime.mjs", with("MODEL", "gpt-realtime", "AUTH", "subprotocol"), "response.done"},
		{"responses", "responses_ws.mjs", with("MODEL", "gpt-4o-mini"), "response.completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runNode(t, ctx, tc.script, tc.env)
			s := res.Sessions[0]
			if len(s.Failures) > 0 || len(s.Errors) > 0 {
				t.Fatalf("failures %v, error events %v", s.Failures, s.Errors)
			}
			if n := count(s.Events, tc.final); n != 2 || len(s.Usage) != 2 || s.text() == "" {
				t.Fatalf("%d %s events, %d usages, text %q: %v", n, tc.final, len(s.Usage), s.text(), s.Events)
			}
			if tc.script == "responses_ws.mjs" {
				// The SDK declares both details fields, neither optional.
				if d := s.Usage[0].InputTokensDetails; d == nil || d.CacheWriteTokens == nil {
					t.Errorf("usage lacks input_tokens_details.cache_write_tokens: %+v", s.Usage[0])
				}
			}
		})
	}
}

func count(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}
