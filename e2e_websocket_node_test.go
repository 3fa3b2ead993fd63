package openairelay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The relay's WebSocket sessions driven by the official Node SDK's clients
// (testdata/node): its Realtime client (GA and beta), a browser-style
// client authenticating in the subprotocol, and its Responses WebSocket
// client; many sessions at once; refused upgrades as a client sees them.

func nodeEnv(key, model string, kv ...string) map[string]string {
	m := map[string]string{"OPENAI_BASE_URL": relayBase, "OPENAI_API_KEY": key, "MODEL": model}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// checkSessions fails the test unless every session opened, had turns
// responses each ending with final and usage, and saw no error.
func checkSessions(t *testing.T, res nodeResult, n, turns int, final string) (tokens int) {
	t.Helper()
	if len(res.Sessions) != n {
		t.Fatalf("%d sessions reported, want %d", len(res.Sessions), n)
	}
	for i, s := range res.Sessions {
		if !s.Opened || len(s.Failures) > 0 || len(s.Errors) > 0 {
			t.Fatalf("session %d: opened %v, failures %v, error events %+v", i, s.Opened, s.Failures, s.Errors)
		}
		if got := count(s.Events, final); got != turns || len(s.Usage) != turns || s.text() == "" {
			t.Fatalf("session %d: %d %s events and %d usages, want %d; text %q", i, got, final, len(s.Usage), turns, s.text())
		}
		if s.CloseCode != 1000 {
			t.Errorf("session %d closed with %d %q", i, s.CloseCode, s.CloseReason)
		}
		for _, u := range s.Usage {
			tokens += u.TotalTokens
		}
	}
	return tokens
}

func TestE2EWebSocketNodeRealtime(t *testing.T) {
	nodeSDK(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-node-rt-upstream-00001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{RPM: 1000, TPM: 1000000})
	t.Setenv("E2E_NODE_KEY", upKey)
	client := "rk-node-realtime-client-0001"
	e := startRelay(t, fake, `
		client app {
			key `+client+`
			models gpt-realtime gpt-4o-mini
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_NODE_KEY} {
				name nodert
			}
		}`)
	ctx := context.Background()
	var want int
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"GA", nil},
		{"beta", []string{"BETA", "1"}},
		{"subprotocol", []string{"AUTH", "subprotocol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runNode(t, ctx, "realtime.mjs", nodeEnv(client, "gpt-realtime", append([]string{"TURNS", "2"}, tc.env...)...))
			want += checkSessions(t, res, 1, 2, "response.done")
			s := res.Sessions[0]
			if tc.name == "subprotocol" {
				// The relay chose the subprotocol the client offered
				// besides its key, never the one carrying the key.
				if s.Subprotocol != "realtime" {
					t.Errorf("subprotocol %q, want realtime", s.Subprotocol)
				}
			}
			if s.Handshake == nil || s.Handshake.Status != http.StatusSwitchingProtocols {
				t.Fatalf("handshake %+v", s.Handshake)
			}
			for name, v := range s.Handshake.Headers {
				if strings.Contains(fmt.Sprint(v), client) || strings.Contains(fmt.Sprint(v), upKey) {
					t.Errorf("handshake header %s carries a key", name)
				}
			}
		})
	}
	waitFor(t, func() bool { return adminKeySessions(t, "nodert") == 0 }, "the sessions to end")
	k := wsAdminKey(t, "nodert")
	if got := int(k.PromptTokens + k.CompletionTokens); got != want {
		t.Errorf("the key counted %d tokens, the responses reported %d", got, want)
	}
	for _, r := range fake.Records() {
		if r.Status == http.StatusSwitchingProtocols && r.Key != upKey {
			t.Errorf("upgrade with key %q", r.Key)
		}
	}
	e.assertNoSecrets([]string{upKey}, []string{client})
}

func TestE2EWebSocketNodeResponses(t *testing.T) {
	nodeSDK(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-node-resp-upstream-0001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{RPM: 1000, TPM: 1000000})
	t.Setenv("E2E_NODE_KEY", upKey)
	client := "rk-node-responses-client-001"
	e := startRelay(t, fake, `
		client app {
			key `+client+`
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_NODE_KEY} {
				name noderesp
			}
		}`)
	ctx := context.Background()
	for _, store := range []string{"1", "0"} {
		t.Run("store="+store, func(t *testing.T) {
			res := runNode(t, ctx, "responses_ws.mjs", nodeEnv(client, "gpt-4o-mini", "TURNS", "3", "STORE", store))
			checkSessions(t, res, 1, 3, "response.completed")
			if s := res.Sessions[0]; len(s.ResponseIDs) != 3 || s.Statuses[2] != "completed" {
				t.Errorf("responses %v, statuses %v", s.ResponseIDs, s.Statuses)
			}
		})
	}
	// Each turn after the first continued the one before it.
	var chained int
	for _, r := range fake.Records() {
		if strings.Contains(string(r.Body), `"previous_response_id"`) {
			chained++
		}
	}
	if chained != 4 {
		t.Errorf("the upstream saw %d responses continuing another, want 4 (2 per socket)", chained)
	}
	k := wsAdminKey(t, "noderesp")
	if k.Requests != 6 {
		t.Errorf("the key counted %d requests, want the 6 responses", k.Requests)
	}
	e.assertNoSecrets([]string{upKey}, []string{client})
}

// TestE2EWebSocketNodeManySessions opens 24 Realtime sessions at once over
// three keys, each with two turns, and holds them: while they are open the
// admin API shows them all, spread over the keys, and they all end.
func TestE2EWebSocketNodeManySessions(t *testing.T) {
	nodeSDK(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	var keys []string
	for i := range 3 {
		k := fmt.Sprintf("sk-e2e-node-many-upstream-%04d", i)
		keys = append(keys, k)
		fake.AddKey(k, fakeopenai.KeyLimits{})
		t.Setenv("E2E_NODE_KEY_"+strconv.Itoa(i), k)
	}
	client := "rk-node-many-sessions-00001"
	e := startRelay(t, fake, `
		client app {
			key `+client+`
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_NODE_KEY_0} {
				name many0
				max_concurrent 10
			}
			key {env.E2E_NODE_KEY_1} {
				name many1
				max_concurrent 10
			}
			key {env.E2E_NODE_KEY_2} {
				name many2
				max_concurrent 10
			}
		}`)
	const sessions = 24
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan nodeResult, 1)
	go func() {
		// runNode fails the test from this goroutine only through t.Fatalf
		// of a broken run, which the main goroutine then reports as well.
		done <- runNodeQuiet(ctx, "realtime.mjs", nodeEnv(client, "gpt-realtime", "SESSIONS", strconv.Itoa(sessions), "TURNS", "2", "HOLD_MS", "2500"))
	}()
	sum := func() (n int64, per []int64) {
		for _, name := range []string{"many0", "many1", "many2"} {
			s := adminKeySessions(t, name)
			n += s
			per = append(per, s)
		}
		return n, per
	}
	var peak int64
	var spread []int64
	deadline := time.Now().Add(20 * time.Second)
	for peak < sessions && time.Now().Before(deadline) {
		if n, per := sum(); n > peak {
			peak, spread = n, per
		}
		time.Sleep(50 * time.Millisecond)
	}
	if peak != sessions {
		t.Errorf("the admin API showed at most %d sessions open, want %d", peak, sessions)
	}
	for i, n := range spread {
		if n > 10 {
			t.Errorf("key many%d held %d sessions, past its max_concurrent 10", i, n)
		}
	}
	var res nodeResult
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the sessions did not end")
	}
	if !res.OK {
		t.Fatalf("node: %s", res.Error)
	}
	checkSessions(t, res, sessions, 2, "response.done")
	waitFor(t, func() bool { n, _ := sum(); return n == 0 }, "every session to end")
	if n := fake.OpenWebSockets(); n != 0 {
		t.Errorf("%d upstream sessions still open", n)
	}
	e.assertNoSecrets(keys, []string{client})
}

// runNodeQuiet is runNode for another goroutine than the test's: it
// reports a broken run in the result instead of failing the test.
func runNodeQuiet(ctx context.Context, script string, env map[string]string) nodeResult {
	var res nodeResult
	cmd := nodeCommand(ctx, script, env)
	out, err := cmd.Output()
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return nodeResult{Error: fmt.Sprintf("%v; exit %v; stdout %.500s", jerr, err, out)}
	}
	return res
}

// TestE2EWebSocketNodeRefusals is refused upgrades as a plain `ws` client
// sees them: the status and an OpenAI error body, no session.
func TestE2EWebSocketNodeRefusals(t *testing.T) {
	nodeSDK(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-node-refuse-upstream-01"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_NODE_KEY", upKey)
	client := "rk-node-refusals-client-0001"
	startRelay(t, fake, `
		client app {
			key `+client+`
			models gpt-realtime
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_NODE_KEY}
		}`)
	ctx := context.Background()
	for _, tc := range []struct {
		name, key, model, auth string
		status                 int
		code                   string
	}{
		{"unknown client key", "rk-not-a-client-key-0000000", "gpt-realtime", "header", 401, "invalid_api_key"},
		{"unknown key in the subprotocol", "rk-not-a-client-key-0000000", "gpt-realtime", "subprotocol", 401, "invalid_api_key"},
		{"model not allowed", client, "gpt-4o-mini", "header", 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runNode(t, ctx, "realtime.mjs", nodeEnv(tc.key, tc.model, "RAW", "1", "AUTH", tc.auth))
			s := res.Sessions[0]
			if s.Opened || s.Handshake == nil || s.Handshake.Status != tc.status {
				t.Fatalf("opened %v, handshake %+v; want %d", s.Opened, s.Handshake, tc.status)
			}
			if !isOpenAIError([]byte(s.Handshake.Body)) {
				t.Fatalf("body is not an OpenAI error: %s", s.Handshake.Body)
			}
			if tc.code != "" && !strings.Contains(s.Handshake.Body, `"`+tc.code+`"`) {
				t.Errorf("body %s lacks code %s", s.Handshake.Body, tc.code)
			}
			if strings.Contains(s.Handshake.Body, tc.key) {
				t.Error("the refusal repeats the client's key")
			}
		})
	}
	if n := len(fake.Records()); n != 0 {
		t.Errorf("the upstream saw %d requests for refused upgrades", n)
	}
}
