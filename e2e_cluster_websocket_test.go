package openairelay_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
	"github.com/caddyrelay/openairelay/internal/redistest"
)

// TestClusterWebSocketSessionHoldsSharedSlot opens a Realtime session
// through instance A on a key of one concurrency slot, shared in Redis:
// the session's turns take tokens alone (they would not fit otherwise),
// a session through B waits max_wait and is refused, and once A's session
// ends B's is admitted and its usage lands on the shared day counters.
func TestClusterWebSocketSessionHoldsSharedSlot(t *testing.T) {
	t.Parallel()
	skipLong(t) // before Redis starts; startInstance builds the binary
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	lines, keys, env := clusterKeys(fake, "wsslot", 1, fakeopenai.KeyLimits{}, "max_concurrent 1")
	block := `
		client app {
			key rk-cluster-ws-slot-000001
		}
		upstream pool ` + fake.URL() + ` {
` + lines + `		}
		max_wait 400ms
` + stateBlock([]string{srv.Addr()}, clusterPrefix(t))
	a := startInstance(t, "A", block, env...)
	b := startInstance(t, "B", block, env...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(in *instance) (*websocket.Conn, *http.Response, error) {
		url := strings.Replace(in.base, "http://", "ws://", 1) + "/realtime?model=gpt-realtime"
		return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: bearer("rk-cluster-ws-slot-000001")})
	}

	sa, resp, err := dial(a)
	if err != nil {
		t.Fatalf("session through A: %v (%v)", err, resp)
	}
	defer sa.CloseNow()
	wsUntil(t, ctx, sa, "session.created")
	var tokens int
	for _, text := range []string{"first turn", "second turn"} {
		done := realtimeTurn(t, ctx, sa, text)
		if done.Response == nil || done.Response.Usage == nil {
			t.Fatalf("response.done without usage: %s", done.raw)
		}
		tokens += done.Response.Usage.TotalTokens
	}

	start := time.Now()
	_, resp, err = dial(b)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("session through B while A's holds the key's one slot: %v %v", err, resp)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("B refused after %v, before max_wait", waited)
	}

	sa.Close(websocket.StatusNormalClosure, "")
	// The slot's release reaches Redis off A's path: B is admitted soon after.
	var sb *websocket.Conn
	deadline := time.Now().Add(10 * time.Second)
	for sb == nil {
		c, resp, err := dial(b)
		switch {
		case err == nil:
			sb = c
		case time.Now().After(deadline):
			t.Fatalf("B still refused 10s after A's session ended: %v %v", err, resp)
		default:
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer sb.CloseNow()
	wsUntil(t, ctx, sb, "session.created")
	done := realtimeTurn(t, ctx, sb, "third turn")
	tokens += done.Response.Usage.TotalTokens
	sb.Close(websocket.StatusNormalClosure, "")

	for _, rec := range fake.Records() {
		if rec.Key != keys[0] {
			t.Errorf("a record on key %q", rec.Key)
		}
	}
	// Both instances read the key's shared day counters: two sessions (the
	// turns are no requests), and every turn's tokens.
	for _, in := range []*instance{a, b} {
		var k clusterKeyView
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if k = in.key("wsslot-0"); k.Limits.RequestsToday == 2 && k.Limits.TokensToday == int64(tokens) {
				break
			}
		}
		if k.Limits.RequestsToday != 2 || k.Limits.TokensToday != int64(tokens) {
			t.Errorf("%s: the key's day shows %d requests and %d tokens; want 2 sessions and the %d tokens of the turns",
				in.name, k.Limits.RequestsToday, k.Limits.TokensToday, tokens)
		}
	}
}
