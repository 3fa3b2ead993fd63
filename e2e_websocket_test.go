package openairelay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The WebSocket sessions end to end, driven with a Go WebSocket client
// (coder/websocket); the official Node SDK's clients are in
// e2e_websocket_node_test.go.

var wsBase = "ws://localhost:" + httpPort + "/v1"

// wsMsg is a server event as these tests read it.
type wsMsg struct {
	Type   string `json:"type"`
	Status int    `json:"status"`
	Delta  string `json:"delta"`
	Error  *struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
		EventID string `json:"event_id"`
	} `json:"error"`
	Response *struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Usage  *struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	} `json:"response"`
	raw string
}

func wsDial(t *testing.T, ctx context.Context, path string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	return websocket.Dial(ctx, wsBase+path, &websocket.DialOptions{HTTPHeader: header, Subprotocols: subprotocols})
}

func bearer(key string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}}
}

func wsSend(t *testing.T, ctx context.Context, c *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// wsUntil reads events until one of type typ (or an error event), and
// returns all read.
func wsUntil(t *testing.T, ctx context.Context, c *websocket.Conn, typ string) []wsMsg {
	t.Helper()
	var out []wsMsg
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read (waiting for %s, after %d events): %v", typ, len(out), err)
		}
		var m wsMsg
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("event is not JSON: %q", b)
		}
		m.raw = string(b)
		out = append(out, m)
		if m.Type == typ || m.Type == "error" {
			return out
		}
	}
}

func realtimeTurn(t *testing.T, ctx context.Context, c *websocket.Conn, text string) wsMsg {
	t.Helper()
	wsSend(t, ctx, c, map[string]any{"type": "conversation.item.create", "item": map[string]any{
		"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": text}}}})
	wsSend(t, ctx, c, map[string]any{"type": "response.create", "event_id": "evt_" + strings.ReplaceAll(text, " ", "_")})
	evs := wsUntil(t, ctx, c, "response.done")
	last := evs[len(evs)-1]
	if last.Type != "response.done" {
		t.Fatalf("turn %q ended with %s", text, last.raw)
	}
	return last
}

func TestE2EWebSocketRealtime(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-realtime-upstream-01"
	fake.AddKey(upKey, fakeopenai.KeyLimits{RPM: 1000, TPM: 1000000})
	t.Setenv("E2E_WS_KEY", upKey)
	e := startRelay(t, fake, `
		client app {
			key rk-ws-realtime-client-0001
			models gpt-realtime gpt-4o-mini
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY} {
				name wskey
			}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, resp, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-realtime-client-0001"))
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "" {
		t.Errorf("subprotocol %q chosen without one offered", got)
	}
	first := wsUntil(t, ctx, c, "session.created")
	if first[0].Type != "session.created" {
		t.Fatalf("first event %s", first[0].raw)
	}
	if n := adminKeySessions(t, "wskey"); n != 1 {
		t.Errorf("admin shows %d sessions on the key, want 1", n)
	}
	wsSend(t, ctx, c, map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "be brief"}})
	wsUntil(t, ctx, c, "session.updated")
	done := realtimeTurn(t, ctx, c, "hello there")
	if done.Response == nil || done.Response.Usage == nil || done.Response.Usage.TotalTokens == 0 {
		t.Fatalf("response.done without usage: %s", done.raw)
	}
	done2 := realtimeTurn(t, ctx, c, "second turn")
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Errorf("close: %v", err)
	}
	// The session's records: one upgrade with the key's credentials, two
	// responses.
	var upgrades, creates int
	for _, r := range fake.Records() {
		switch {
		case r.Status == http.StatusSwitchingProtocols:
			upgrades++
			if r.Key != upKey || r.Model != "gpt-realtime" {
				t.Errorf("upgrade record key %q model %q", r.Key, r.Model)
			}
			if strings.Contains(r.Header.Get("Authorization"), "rk-ws") {
				t.Error("the client's key reached the upstream")
			}
		case r.Event == "response.create":
			creates++
		}
	}
	if upgrades != 1 || creates != 2 {
		t.Errorf("upstream saw %d upgrades and %d responses, want 1 and 2", upgrades, creates)
	}
	waitFor(t, func() bool { return adminKeySessions(t, "wskey") == 0 }, "the session to end")
	want := int64(done.Response.Usage.TotalTokens + done2.Response.Usage.TotalTokens)
	if k := wsAdminKey(t, "wskey"); k.PromptTokens+k.CompletionTokens != want {
		t.Errorf("key counted %d+%d tokens, the responses reported %d", k.PromptTokens, k.CompletionTokens, want)
	}
	e.assertNoSecrets([]string{upKey}, []string{"rk-ws-realtime-client-0001"})
}

func TestE2EWebSocketRefusals(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-refusals-upstream-1"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-refusals-client-00001
			models gpt-realtime
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		name   string
		path   string
		header http.Header
		subs   []string
		status int
		code   string
	}{
		{"no key", "/realtime?model=gpt-realtime", nil, nil, 401, ""},
		{"wrong key", "/realtime?model=gpt-realtime", bearer("rk-not-a-client-key-000000"), nil, 401, "invalid_api_key"},
		{"model not allowed", "/realtime?model=gpt-4o-mini", bearer("rk-ws-refusals-client-00001"), nil, 403, ""},
		{"no model", "/realtime", bearer("rk-ws-refusals-client-00001"), nil, 400, "missing_required_parameter"},
		{"unknown model upstream", "/realtime?model=gpt-realtime-nope", bearer("rk-ws-refusals-client-00001"), nil, 403, ""},
		{"other path", "/chat/completions", bearer("rk-ws-refusals-client-00001"), nil, 400, "websocket_not_supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := wsDial(t, ctx, tc.path, tc.header, tc.subs...)
			if err == nil || resp == nil {
				t.Fatalf("upgrade accepted (%v)", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if !isOpenAIError(body) {
				t.Fatalf("body is not an OpenAI error: %s", body)
			}
			if tc.code != "" && !strings.Contains(string(body), `"`+tc.code+`"`) {
				t.Errorf("body %s lacks code %s", body, tc.code)
			}
		})
	}

	// The browser's way: the key in the subprotocol list.
	c, resp, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", nil, "realtime", "openai-insecure-api-key.rk-ws-refusals-client-00001")
	if err != nil {
		t.Fatalf("subprotocol dial: %v %v", err, resp)
	}
	if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "realtime" {
		t.Errorf("subprotocol %q, want realtime", got)
	}
	wsUntil(t, ctx, c, "session.created")
	// A session.update naming another model is refused; the session stays.
	wsSend(t, ctx, c, map[string]any{"type": "session.update", "event_id": "evt_m", "session": map[string]any{"type": "realtime", "model": "gpt-4o-mini"}})
	evs := wsUntil(t, ctx, c, "session.updated")
	if last := evs[len(evs)-1]; last.Type != "error" || last.Error == nil || last.Error.EventID != "evt_m" {
		t.Fatalf("model change got %s", last.raw)
	}
	c.Close(websocket.StatusNormalClosure, "")
	for _, r := range fake.Records() {
		if strings.Contains(r.Header.Get("Sec-Websocket-Protocol"), "insecure-api-key") {
			t.Error("the client's key reached the upstream in the subprotocol list")
		}
	}
}

func TestE2EWebSocketResponses(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-responses-upstream1"
	fake.AddKey(upKey, fakeopenai.KeyLimits{RPM: 1000, TPM: 1000000})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-responses-client-0001
		}
		client other {
			key rk-ws-responses-other-00001
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY} {
				name wsresp
			}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := wsDial(t, ctx, "/responses", bearer("rk-ws-responses-client-0001"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	wsSend(t, ctx, c, map[string]any{"type": "response.create", "model": "gpt-4o-mini", "input": "first turn", "store": false})
	evs := wsUntil(t, ctx, c, "response.completed")
	last := evs[len(evs)-1]
	if last.Type != "response.completed" || last.Response.Usage == nil {
		t.Fatalf("first turn ended with %s", last.raw)
	}
	// The socket's own response (not stored) may be continued on it.
	wsSend(t, ctx, c, map[string]any{"type": "response.create", "model": "gpt-4o-mini", "input": "second turn",
		"previous_response_id": last.Response.ID, "store": false})
	evs = wsUntil(t, ctx, c, "response.completed")
	if l := evs[len(evs)-1]; l.Type != "response.completed" {
		t.Fatalf("second turn ended with %s", l.raw)
	}
	// A stored response made here is the client's: another client's socket
	// cannot continue it.
	wsSend(t, ctx, c, map[string]any{"type": "response.create", "model": "gpt-4o-mini", "input": "stored"})
	evs = wsUntil(t, ctx, c, "response.completed")
	stored := evs[len(evs)-1].Response.ID
	c.Close(websocket.StatusNormalClosure, "")

	o, _, err := wsDial(t, ctx, "/responses", bearer("rk-ws-responses-other-00001"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer o.CloseNow()
	wsSend(t, ctx, o, map[string]any{"type": "response.create", "model": "gpt-4o-mini", "input": "steal", "previous_response_id": stored})
	evs = wsUntil(t, ctx, o, "response.completed")
	if l := evs[len(evs)-1]; l.Type != "error" || l.Status != 400 {
		t.Fatalf("another client's response continued: %s", l.raw)
	}
	o.Close(websocket.StatusNormalClosure, "")
}

// wsKeyView is what these tests read of a key in the admin API.
type wsKeyView struct {
	ID               string `json:"id"`
	Requests         int64  `json:"requests"`
	Sessions         int64  `json:"sessions"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	Limits           struct {
		InFlight int64 `json:"in_flight"`
	} `json:"limits"`
}

// wsAdminKey is key id as the admin API shows it.
func wsAdminKey(t *testing.T, id string) wsKeyView {
	t.Helper()
	var keys []wsKeyView
	adminGet(t, "/openai_relay/keys", &keys)
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("no key %s in the admin API", id)
	return wsKeyView{}
}

// adminKeySessions is the sessions the admin API shows open on key id.
func adminKeySessions(t *testing.T, id string) int64 { return wsAdminKey(t, id).Sessions }

// wsCloseOf reads until the session ends and returns its close status and
// reason, and the error events before it.
func wsCloseOf(t *testing.T, ctx context.Context, c *websocket.Conn) (websocket.StatusCode, string, []wsMsg) {
	t.Helper()
	var errs []wsMsg
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason, errs
			}
			t.Fatalf("session ended without a close frame: %v", err)
		}
		var m wsMsg
		_ = json.Unmarshal(b, &m)
		m.raw = string(b)
		if m.Type == "error" {
			errs = append(errs, m)
		}
	}
}

func TestE2EWebSocketBounds(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-bounds-upstream-001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-bounds-client-0000001
		}
		client other {
			key rk-ws-bounds-other-00000001
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY} {
				name wsbounds
			}
		}
		max_wait 300ms
		websocket {
			max_sessions_per_client 1
			max_sessions_per_key 1
			idle_timeout 1500ms
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, _, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-bounds-client-0000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.CloseNow()
	wsUntil(t, ctx, a, "session.created")

	// The client's second session: refused at once.
	_, resp, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-bounds-client-0000001"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second session of the client: %v %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "too_many_sessions") {
		t.Errorf("refusal %s", body)
	}
	// Another client's session: the only key has its one session; it
	// waits max_wait, then 429.
	start := time.Now()
	_, resp, err = wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-bounds-other-00000001"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("session on a full key: %v %v", err, resp)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("refused after %v, before max_wait", waited)
	}
	// Idle: the relay closes the session, 1000 with the reason.
	code, reason, _ := wsCloseOf(t, ctx, a)
	if code != websocket.StatusNormalClosure || !strings.Contains(reason, "idle") {
		t.Fatalf("idle session closed with %d %q", code, reason)
	}
	waitFor(t, func() bool { return fake.OpenWebSockets() == 0 }, "the upstream session to close")
	// The key is free again.
	b, _, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-bounds-other-00000001"))
	if err != nil {
		t.Fatalf("after the idle close: %v", err)
	}
	wsUntil(t, ctx, b, "session.created")
	b.Close(websocket.StatusNormalClosure, "")
}

func TestE2EWebSocketKeyRetiredAndClientGone(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-retire-upstream-001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-retire-client-0000001
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY} {
				name wsretire
			}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A client that goes away without a close: the upstream session ends
	// at once.
	gone, _, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-retire-client-0000001"))
	if err != nil {
		t.Fatal(err)
	}
	wsUntil(t, ctx, gone, "session.created")
	if fake.OpenWebSockets() != 1 {
		t.Fatalf("%d upstream sessions", fake.OpenWebSockets())
	}
	gone.CloseNow()
	waitFor(t, func() bool { return fake.OpenWebSockets() == 0 }, "the upstream session to close")
	waitFor(t, func() bool { return adminKeySessions(t, "wsretire") == 0 }, "the relay's session to end")

	// The key retired while a session is open: an error event, then 1013.
	c, _, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-retire-client-0000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wsUntil(t, ctx, c, "session.created")
	resp, err := http.Post(adminBase+"/openai_relay/keys/wsretire/retire", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("retire: %v %v", err, resp)
	}
	code, reason, errs := wsCloseOf(t, ctx, c)
	if code != websocket.StatusTryAgainLater || !strings.Contains(reason, "retired") {
		t.Fatalf("closed with %d %q", code, reason)
	}
	if len(errs) != 1 || errs[0].Error == nil || errs[0].Error.Code != "upstream_key_retired" {
		t.Fatalf("error events %+v", errs)
	}
	// The session ends once both sides are closed, after the client read
	// its close frame; its slot goes back before it stops counting.
	waitFor(t, func() bool { return adminKeySessions(t, "wsretire") == 0 }, "the relay's session to end")
	if k := wsAdminKey(t, "wsretire"); k.Limits.InFlight != 0 {
		t.Errorf("%d in flight after the sessions ended", k.Limits.InFlight)
	}
}

// TestE2EWebSocketBadFrame sends what no WebSocket client may (an unmasked
// frame): the relay closes with 1002, and the upstream session ends.
func TestE2EWebSocketBadFrame(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-badframe-upstream01"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-badframe-client-000001
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY}
		}`)
	conn, err := net.Dial("tcp", "localhost:"+httpPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer rk-ws-badframe-client-000001\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", err, resp)
	}
	if got := resp.Header.Get("Sec-Websocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("accept %q", got)
	}
	if _, err := conn.Write([]byte{0x81, 2, '{', '}'}); err != nil { // unmasked
		t.Fatal(err)
	}
	// Frames until the close: session.created may come first.
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		n := int(h[1] & 0x7f)
		if n == 126 {
			var l [2]byte
			io.ReadFull(br, l[:])
			n = int(l[0])<<8 | int(l[1])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		if h[0]&0x0f == 0x8 {
			if len(p) < 2 || int(p[0])<<8|int(p[1]) != 1002 {
				t.Fatalf("close payload %q, want 1002", p)
			}
			break
		}
	}
	waitFor(t, func() bool { return fake.OpenWebSockets() == 0 }, "the upstream session to close")
}

// TestE2EWebSocketBudget: a Realtime session's responses are spent on the
// client's budget; once it is spent, the next response.create gets the
// API's insufficient_quota error event and the session closes (1008).
func TestE2EWebSocketBudget(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-budget-upstream-001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-budget-client-0000001
			budget 0.001 daily
		}
		client free {
			key rk-ws-budget-free-000000001
			budget 5 daily
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY}
		}
		price gpt-realtime 1000 1000`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-budget-client-0000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wsUntil(t, ctx, c, "session.created")
	realtimeTurn(t, ctx, c, "spend the whole budget in one answer please")
	wsSend(t, ctx, c, map[string]any{"type": "response.create", "event_id": "evt_over"})
	code, _, errs := wsCloseOf(t, ctx, c)
	if code != websocket.StatusPolicyViolation || len(errs) != 1 || errs[0].Error.Code != "insufficient_quota" || errs[0].Error.EventID != "evt_over" {
		t.Fatalf("over budget: close %d, errors %+v", code, errs)
	}
	creates := 0
	for _, r := range fake.Records() {
		if r.Event == "response.create" {
			creates++
		}
	}
	if creates != 1 {
		t.Errorf("upstream saw %d responses, want 1 (the second was refused)", creates)
	}
	// A model without a price cannot be used by a client with a budget.
	_, resp, err := wsDial(t, ctx, "/realtime?model=gpt-realtime-mini", bearer("rk-ws-budget-free-000000001"))
	if err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unpriced model: %v %v", err, resp)
	}
}

// TestE2EWebSocketWaitsForRoom: responses inside sessions are held until
// the key has room, so the upstream never refuses one for its limits: a
// Responses socket at the key's RPM, a Realtime session at its TPM.
func TestE2EWebSocketWaitsForRoom(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	rpmKey, tpmKey := "sk-e2e-ws-wait-rpm-upstream01", "sk-e2e-ws-wait-tpm-upstream01"
	fake.AddKey(rpmKey, fakeopenai.KeyLimits{RPM: 60})
	fake.AddKey(tpmKey, fakeopenai.KeyLimits{TPM: 1200})
	t.Setenv("E2E_WS_RPM_KEY", rpmKey)
	t.Setenv("E2E_WS_TPM_KEY", tpmKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-wait-client-000000001
		}
		upstream byrpm {UPSTREAM} {
			models gpt-4o-mini
			key {env.E2E_WS_RPM_KEY} {
				rpm 60
			}
		}
		upstream bytpm {UPSTREAM} {
			models gpt-realtime
			key {env.E2E_WS_TPM_KEY} {
				tpm 1200
				# The session is the one request and holds the one slot:
				# its responses take tokens alone, or they would wait forever.
				rpm 1
				max_concurrent 1
			}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, _, err := wsDial(t, ctx, "/responses", bearer("rk-ws-wait-client-000000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	start := time.Now()
	for i := range 3 {
		wsSend(t, ctx, c, map[string]any{"type": "response.create", "model": "gpt-4o-mini", "input": fmt.Sprintf("turn %d", i), "store": false})
		evs := wsUntil(t, ctx, c, "response.completed")
		if l := evs[len(evs)-1]; l.Type != "response.completed" {
			t.Fatalf("turn %d: %s", i, l.raw)
		}
	}
	if elapsed := time.Since(start); elapsed < 1500*time.Millisecond {
		t.Errorf("3 responses at 60 RPM took %v: the relay did not pace them", elapsed)
	}
	c.Close(websocket.StatusNormalClosure, "")

	r, _, err := wsDial(t, ctx, "/realtime?model=gpt-realtime", bearer("rk-ws-wait-client-000000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseNow()
	wsUntil(t, ctx, r, "session.created")
	for i := range 4 {
		// 20 tokens a second: each response (its prompt and 12 tokens
		// of allowance) is about a second's worth.
		wsSend(t, ctx, r, map[string]any{"type": "conversation.item.create", "item": map[string]any{
			"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "a short turn"}}}})
		wsSend(t, ctx, r, map[string]any{"type": "response.create", "response": map[string]any{"max_output_tokens": 12, "conversation": "none",
			"input": []any{map[string]any{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "a short turn"}}}}}})
		evs := wsUntil(t, ctx, r, "response.done")
		if l := evs[len(evs)-1]; l.Type != "response.done" {
			t.Fatalf("realtime turn %d: %s", i, l.raw)
		}
	}
	r.Close(websocket.StatusNormalClosure, "")
	for _, rec := range fake.Records() {
		if rec.Status == http.StatusTooManyRequests {
			t.Errorf("the upstream refused %s %s with 429", rec.Path, rec.Event)
		}
	}
}

// TestE2EWebSocketTLSUpstream dials a Realtime session to an https upstream
// that offers HTTP/2 (a self-signed certificate, through the upstream's
// transport block), with Azure-style api-key auth and a model alias: the
// upgrade goes over HTTP/1.1 on the upstream's transport, with the key's
// header, and the model as the upstream names it.
func TestE2EWebSocketTLSUpstream(t *testing.T) {
	fake := fakeopenai.NewHandler(fakeopenai.Options{RequireAPIKeyHeader: true})
	k := "azure-ws-key-0123456789abcdef01"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	srv := httptest.NewUnstartedServer(fake)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	t.Setenv("E2E_WS_TLS_KEY", k)
	e := startRelay(t, fakeAt(srv.URL+"/v1"), `
		client app {
			key rk-ws-tls-client-0000000001
		}
		upstream azure {
			url {UPSTREAM}
			auth api-key
			model_alias voice gpt-realtime
			transport http {
				tls_insecure_skip_verify
			}
			key {env.E2E_WS_TLS_KEY}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := wsDial(t, ctx, "/realtime?model=voice", bearer("rk-ws-tls-client-0000000001"))
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	wsUntil(t, ctx, c, "session.created")
	done := realtimeTurn(t, ctx, c, "over tls")
	if done.Response == nil || done.Response.Usage == nil || done.Response.Usage.TotalTokens == 0 {
		t.Fatalf("response.done without usage: %s", done.raw)
	}
	c.Close(websocket.StatusNormalClosure, "")
	var upgrades int
	for _, r := range fake.Records() {
		if r.Status != http.StatusSwitchingProtocols {
			continue
		}
		upgrades++
		for name, vs := range r.Header {
			if strings.Contains(strings.Join(vs, ","), "rk-ws-tls") {
				t.Errorf("the client's key reached the upstream in %s", name)
			}
		}
		if r.Header.Get("Api-Key") != k || r.Header.Get("Authorization") != "" || r.Model != "gpt-realtime" {
			t.Errorf("upgrade record: api-key %t, authorization set %t, model %q", r.Header.Get("Api-Key") == k, r.Header.Get("Authorization") != "", r.Model)
		}
	}
	if upgrades != 1 {
		t.Errorf("the upstream saw %d upgrades, want 1", upgrades)
	}
	e.assertNoSecrets([]string{k}, []string{"rk-ws-tls-client-0000000001"})
}

// TestE2EWebSocketGoSDKResponses drives the Responses WebSocket mode with
// the official Go SDK's client (openai-go ResponseService.Connect, from
// v3.99.0): three responses on one socket, each continuing the last, every
// one settled on the key.
func TestE2EWebSocketGoSDKResponses(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-gosdk-upstream-0001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{RPM: 1000, TPM: 1000000})
	t.Setenv("E2E_WS_KEY", upKey)
	e := startRelay(t, fake, `
		client app {
			key rk-ws-gosdk-client-00000001
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY} {
				name wsgosdk
			}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := sdk("rk-ws-gosdk-client-00000001")
	conn, err := client.Responses.Connect(ctx, responses.ResponseConnectionOptions{})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Abort()
	var previous string
	var tokens int64
	for i := range 3 {
		ev := responses.ResponsesClientEventResponseCreateParam{
			Model: "gpt-4o-mini",
			Input: responses.ResponsesClientEventResponseCreateInputUnionParam{OfString: openai.String(fmt.Sprintf("go sdk turn %d", i))},
		}
		if previous != "" {
			ev.PreviousResponseID = openai.String(previous)
		}
		if err := conn.Create(ctx, ev); err != nil {
			t.Fatalf("turn %d: create: %v", i, err)
		}
		resp, err := conn.FinalResponse(ctx)
		if err != nil {
			t.Fatalf("turn %d: %v", i, err)
		}
		if resp.Status != "completed" || resp.OutputText() == "" || resp.Usage.TotalTokens == 0 {
			t.Fatalf("turn %d: status %s, text %q, usage %+v", i, resp.Status, resp.OutputText(), resp.Usage)
		}
		previous = resp.ID
		tokens += resp.Usage.TotalTokens
	}
	if err := conn.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	waitFor(t, func() bool { return fake.OpenWebSockets() == 0 }, "the upstream socket to close")
	k := wsAdminKey(t, "wsgosdk")
	if k.Requests != 3 || k.PromptTokens+k.CompletionTokens != tokens {
		t.Errorf("the key counted %d requests and %d tokens; want 3 and the %d the responses reported", k.Requests, k.PromptTokens+k.CompletionTokens, tokens)
	}
	e.assertNoSecrets([]string{upKey}, []string{"rk-ws-gosdk-client-00000001"})
}

// TestE2EWebSocketGoSDKLanes runs two responses at once on one Responses
// socket, each on its own stream_id lane of the Go SDK, and a third the
// relay refuses (a model the client may not use): every lane gets its own
// events, the refusal included, and both responses are settled on the key.
func TestE2EWebSocketGoSDKLanes(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-ws-lanes-upstream-00001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{RPM: 1000, TPM: 1000000})
	t.Setenv("E2E_WS_KEY", upKey)
	startRelay(t, fake, `
		client app {
			key rk-ws-lanes-client-000000001
			models gpt-4o-mini
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_WS_KEY} {
				name wslanes
			}
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := sdk("rk-ws-lanes-client-000000001")
	conn, err := client.Responses.Connect(ctx, responses.ResponseConnectionOptions{})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Abort()
	lanes := map[string]*responses.ResponseLane{}
	for _, id := range []string{"lane-a", "lane-b", "lane-refused"} {
		l, err := conn.Lane(id)
		if err != nil {
			t.Fatal(err)
		}
		lanes[id] = l
	}
	create := func(lane, model, text string) {
		t.Helper()
		err := conn.Create(ctx, responses.ResponsesClientEventResponseCreateParam{
			Model: model, StreamID: openai.String(lane), Store: openai.Bool(false),
			Input: responses.ResponsesClientEventResponseCreateInputUnionParam{OfString: openai.String(text)},
		})
		if err != nil {
			t.Fatalf("create on %s: %v", lane, err)
		}
	}
	// finalOf reads a lane until its response ends, or its error.
	finalOf := func(l *responses.ResponseLane) (typ, text string, tokens int64, err error) {
		var b strings.Builder
		for {
			union, err := l.Recv(ctx)
			if err != nil {
				return "", "", 0, err
			}
			var ev wsMsg
			if err := json.Unmarshal([]byte(union.RawJSON()), &ev); err != nil {
				return "", "", 0, err
			}
			switch ev.Type {
			case "response.output_text.delta":
				b.WriteString(ev.Delta)
			case "response.completed", "response.failed", "response.incomplete":
				if ev.Response == nil || ev.Response.Usage == nil {
					return ev.Type, b.String(), 0, nil
				}
				return ev.Type, b.String(), int64(ev.Response.Usage.TotalTokens), nil
			case "error":
				return ev.Type, ev.Error.Message, 0, nil
			}
		}
	}
	create("lane-a", "gpt-4o-mini", "first lane")
	create("lane-b", "gpt-4o-mini", "second lane")
	create("lane-refused", "gpt-4o", "not this model")
	var tokens int64
	for lane, want := range map[string]string{"lane-a": "echo: first lane", "lane-b": "echo: second lane"} {
		typ, text, n, err := finalOf(lanes[lane])
		if err != nil || typ != "response.completed" || text != want {
			t.Fatalf("%s: %s %q %v; want response.completed %q", lane, typ, text, err, want)
		}
		tokens += n
	}
	if typ, msg, _, err := finalOf(lanes["lane-refused"]); err != nil || typ != "error" || !strings.Contains(msg, "gpt-4o") {
		t.Fatalf("lane-refused: %s %q %v; want the relay's error event", typ, msg, err)
	}
	conn.Close()
	waitFor(t, func() bool { return fake.OpenWebSockets() == 0 }, "the upstream socket to close")
	k := wsAdminKey(t, "wslanes")
	if k.Requests != 2 || k.PromptTokens+k.CompletionTokens != tokens {
		t.Errorf("the key counted %d requests and %d tokens; want 2 and %d", k.Requests, k.PromptTokens+k.CompletionTokens, tokens)
	}
	if n := k.Limits.InFlight; n != 0 {
		t.Errorf("%d reservations still held on the key", n)
	}
}
