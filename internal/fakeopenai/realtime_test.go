package fakeopenai

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/realtime"
)

// wsEvent is a server event as the tests read it.
type wsEvent struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Status  int             `json:"status"`
	Delta   string          `json:"delta"`
	Session json.RawMessage `json:"session"`
	Error   *struct {
		Type    string  `json:"type"`
		Code    *string `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
		EventID *string `json:"event_id"`
	} `json:"error"`
	Response *struct {
		ID     string          `json:"id"`
		Object string          `json:"object"`
		Status string          `json:"status"`
		Usage  json.RawMessage `json:"usage"`
	} `json:"response"`
	raw []byte
}

type rtUsageMirror struct {
	TotalTokens       int `json:"total_tokens"`
	InputTokens       int `json:"input_tokens"`
	OutputTokens      int `json:"output_tokens"`
	InputTokenDetails struct {
		CachedTokens *int `json:"cached_tokens"`
		TextTokens   *int `json:"text_tokens"`
		AudioTokens  *int `json:"audio_tokens"`
	} `json:"input_token_details"`
	OutputTokenDetails struct {
		TextTokens  *int `json:"text_tokens"`
		AudioTokens *int `json:"audio_tokens"`
	} `json:"output_token_details"`
}

func wsURL(s *Server, path string) string {
	return "ws" + strings.TrimPrefix(s.URL(), "http") + path
}

func wsCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dialWS opens a WebSocket with key in the Authorization header (when key
// is not "") and the given subprotocols and extra header pairs.
func dialWS(t *testing.T, s *Server, path, key string, protos []string, hdr ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	conn, resp, err := websocket.Dial(wsCtx(t), wsURL(s, path), &websocket.DialOptions{HTTPHeader: h, Subprotocols: protos})
	if conn != nil {
		t.Cleanup(func() { _ = conn.CloseNow() })
	}
	return conn, resp, err
}

func mustDial(t *testing.T, s *Server, path, key string, protos []string, hdr ...string) *websocket.Conn {
	t.Helper()
	conn, _, err := dialWS(t, s, path, key, protos, hdr...)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return conn
}

func readEvent(t *testing.T, conn *websocket.Conn) wsEvent {
	t.Helper()
	typ, data, err := conn.Read(wsCtx(t))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v", typ)
	}
	var ev wsEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("event %s: %v", data, err)
	}
	ev.raw = data
	return ev
}

// readUntil reads events up to and including one of the given types.
func readUntil(t *testing.T, conn *websocket.Conn, last ...string) []wsEvent {
	t.Helper()
	var evs []wsEvent
	for len(evs) < 200 {
		ev := readEvent(t, conn)
		evs = append(evs, ev)
		for _, l := range last {
			if ev.Type == l {
				return evs
			}
		}
	}
	t.Fatalf("no %v in %d events", last, len(evs))
	return nil
}

func sendWS(t *testing.T, conn *websocket.Conn, msg string) {
	t.Helper()
	if err := conn.Write(wsCtx(t), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func eventTypes(evs []wsEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func TestRealtimeOpen(t *testing.T) {
	const rpmKey = "sk-rpm-one-000000000000001"
	tests := []struct {
		name     string
		path     string
		key      string   // Authorization header
		protos   []string // subprotocols
		hdr      []string
		status   int    // 0: upgraded
		code     string // error.code of a refusal
		proto    string // selected subprotocol
		useFirst bool   // open a session with rpmKey first
	}{
		{name: "bearer header", path: "/realtime?model=gpt-realtime", key: testKey},
		{name: "subprotocol key", path: "/realtime?model=gpt-realtime", protos: []string{"realtime", "openai-insecure-api-key." + testKey}, proto: "realtime"},
		{name: "subprotocol key, beta", path: "/realtime?model=gpt-realtime", protos: []string{"realtime", "openai-insecure-api-key." + testKey, "openai-beta.realtime-v1"}, proto: "realtime"},
		{name: "no key", path: "/realtime?model=gpt-realtime", status: 401},
		{name: "unknown key", path: "/realtime?model=gpt-realtime", key: "sk-nope-00000000000000000", status: 401, code: "invalid_api_key"},
		{name: "unknown key by subprotocol", path: "/realtime?model=gpt-realtime", protos: []string{"realtime", "openai-insecure-api-key.sk-nope-0000000000000"}, status: 401, code: "invalid_api_key"},
		{name: "unknown model", path: "/realtime?model=gpt-nope", key: testKey, status: 404, code: "model_not_found"},
		{name: "no model", path: "/realtime", key: testKey, status: 400, code: "missing_required_parameter"},
		{name: "rpm bucket empty", path: "/realtime?model=gpt-realtime", key: rpmKey, status: 429, code: "rate_limit_exceeded", useFirst: true},
		{name: "responses", path: "/responses", key: testKey},
		{name: "responses, no key", path: "/responses", status: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{})
			s.AddKey(rpmKey, KeyLimits{RPM: 1}) // a bucket of 1 request
			if tc.useFirst {
				mustDial(t, s, "/realtime?model=gpt-realtime", rpmKey, nil)
			}
			conn, resp, err := dialWS(t, s, tc.path, tc.key, tc.protos, tc.hdr...)
			if tc.status != 0 {
				if err == nil {
					t.Fatal("upgraded")
				}
				if resp == nil || resp.StatusCode != tc.status {
					t.Fatalf("resp %v, want %d (%v)", resp, tc.status, err)
				}
				body, _ := io.ReadAll(resp.Body)
				var e oaError
				if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
					t.Fatalf("body %s", body)
				}
				if tc.code != "" && (e.Error.Code == nil || *e.Error.Code != tc.code) {
					t.Fatalf("code in %s, want %s", body, tc.code)
				}
				if tc.status == 429 && resp.Header.Get("Retry-After") == "" {
					t.Fatal("429 without retry-after")
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("Openai-Project") == "" {
				t.Fatalf("101 headers %v", resp.Header)
			}
			if conn.Subprotocol() != tc.proto {
				t.Fatalf("subprotocol %q, want %q", conn.Subprotocol(), tc.proto)
			}
			// The upgrade is recorded once the 101 is written: the client
			// may read its 101 first.
			recs := s.Records()
			for deadline := time.Now().Add(2 * time.Second); len(recs) == 0 && time.Now().Before(deadline); recs = s.Records() {
				time.Sleep(5 * time.Millisecond)
			}
			if len(recs) != 1 || recs[0].Status != 101 || recs[0].Key != testKey || recs[0].Event != "" || !recs[0].Stream {
				t.Fatalf("records %+v", recs)
			}
			if strings.HasPrefix(tc.path, "/realtime") {
				ev := readEvent(t, conn)
				var sess struct {
					ID, Object, Model string
				}
				_ = json.Unmarshal(ev.Session, &sess)
				if ev.Type != "session.created" || !strings.HasPrefix(ev.EventID, "event_") ||
					!strings.HasPrefix(sess.ID, "sess_") || sess.Object != "realtime.session" || sess.Model != "gpt-realtime" {
					t.Fatalf("first event %s", ev.raw)
				}
				if recs[0].Model != "gpt-realtime" {
					t.Fatalf("record model %q", recs[0].Model)
				}
			}
		})
	}
}

func TestRealtimePlainGET(t *testing.T) {
	s := newServer(t, Options{})
	resp, body := request(t, s, "GET", "/realtime?model=gpt-realtime", testKey, "")
	if resp.StatusCode != 400 || !strings.Contains(string(body), "WebSocket") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, _ = request(t, s, "GET", "/responses", testKey, "")
	if resp.StatusCode != 405 {
		t.Fatalf("GET /responses: %d", resp.StatusCode)
	}
}

func TestRealtimeResponse(t *testing.T) {
	tests := []struct {
		name   string
		hdr    []string
		delta  string
		added  string
		events []string
	}{
		{name: "GA", delta: "response.output_text.delta", added: "conversation.item.added",
			events: []string{"response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
				"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
				"response.output_text.done", "response.content_part.done", "response.output_item.done", "conversation.item.done", "response.done"}},
		{name: "beta", hdr: []string{"OpenAI-Beta", "realtime=v1"}, delta: "response.text.delta", added: "conversation.item.created",
			events: []string{"response.created", "response.output_item.added", "conversation.item.created", "response.content_part.added",
				"response.text.delta", "response.text.delta", "response.text.delta",
				"response.text.done", "response.content_part.done", "response.output_item.done", "response.done"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{StreamChunks: 3})
			conn := mustDial(t, s, "/realtime?model=gpt-realtime", testKey, nil, tc.hdr...)
			if ev := readEvent(t, conn); ev.Type != "session.created" {
				t.Fatalf("first %s", ev.raw)
			}
			upd := `{"type":"session.update","session":{"type":"realtime","instructions":"abcd","output_modalities":["text"]}}`
			if tc.name == "beta" {
				upd = `{"type":"session.update","session":{"instructions":"abcd","modalities":["text"]}}`
			}
			sendWS(t, conn, upd)
			ev := readEvent(t, conn)
			if ev.Type != "session.updated" || !strings.Contains(string(ev.Session), `"instructions":"abcd"`) {
				t.Fatalf("update: %s", ev.raw)
			}
			// 12 runes of user text + 4 of instructions: 4 tokens.
			sendWS(t, conn, `{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hello there!"}]}}`)
			for _, want := range strings.Fields(map[bool]string{true: "conversation.item.created", false: "conversation.item.added conversation.item.done"}[tc.name == "beta"]) {
				if ev := readEvent(t, conn); ev.Type != want {
					t.Fatalf("item: %s, want %s", ev.raw, want)
				}
			}
			sendWS(t, conn, `{"type":"response.create"}`)
			evs := readUntil(t, conn, "response.done")
			if got := strings.Join(eventTypes(evs), " "); got != strings.Join(tc.events, " ") {
				t.Fatalf("events\n%s\nwant\n%s", got, strings.Join(tc.events, " "))
			}
			var text strings.Builder
			for _, e := range evs {
				if e.Type == tc.delta {
					text.WriteString(e.Delta)
				}
			}
			if text.String() != "echo: hello there!" {
				t.Fatalf("text %q", text.String())
			}
			// The content_part events' part is "text" in both protocols;
			// the item's content is output_text in GA.
			for _, e := range evs {
				var v struct {
					Part struct{ Type string } `json:"part"`
					Item struct {
						Content []struct{ Type string } `json:"content"`
					} `json:"item"`
				}
				_ = json.Unmarshal(e.raw, &v)
				if strings.HasPrefix(e.Type, "response.content_part.") && v.Part.Type != "text" {
					t.Errorf("%s: part type %q, want text", e.Type, v.Part.Type)
				}
				if e.Type == "response.output_item.done" && tc.name == "GA" && (len(v.Item.Content) != 1 || v.Item.Content[0].Type != "output_text") {
					t.Errorf("GA item content %+v, want output_text", v.Item.Content)
				}
			}
			done := evs[len(evs)-1]
			var u rtUsageMirror
			if err := json.Unmarshal(done.Response.Usage, &u); err != nil {
				t.Fatalf("usage %s", done.raw)
			}
			if done.Response.Status != "completed" || done.Response.Object != "realtime.response" || !strings.HasPrefix(done.Response.ID, "resp_") ||
				u.InputTokens != 4 || u.OutputTokens != 3 || u.TotalTokens != 7 ||
				u.InputTokenDetails.CachedTokens == nil || *u.InputTokenDetails.TextTokens != 4 || u.InputTokenDetails.AudioTokens == nil ||
				*u.OutputTokenDetails.TextTokens != 3 || u.OutputTokenDetails.AudioTokens == nil {
				t.Fatalf("response.done %s", done.raw)
			}
			if evs[0].Response == nil || evs[0].Response.Status != "in_progress" || string(evs[0].Response.Usage) != "null" {
				t.Fatalf("response.created %s", evs[0].raw)
			}
			// The second turn sees the first answer in its input.
			sendWS(t, conn, `{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"more"}]}}`)
			sendWS(t, conn, `{"type":"response.create","response":{"max_output_tokens":1}}`)
			evs = readUntil(t, conn, "response.done")
			done = evs[len(evs)-1]
			_ = json.Unmarshal(done.Response.Usage, &u)
			// abcd + hello there! + echo: hello there! + more = 4+12+18+4 runes.
			if done.Response.Status != "incomplete" || u.InputTokens != 10 || u.OutputTokens != 1 {
				t.Fatalf("second response.done %s", done.raw)
			}
			var creates int
			for _, r := range s.Records() {
				if r.Event == "response.create" {
					creates++
					if r.Status != 200 || r.Key != testKey || r.Model != "gpt-realtime" || !strings.Contains(string(r.Body), "response.create") {
						t.Fatalf("record %+v", r)
					}
				}
			}
			if creates != 2 || s.Count(testKey) != 3 || s.Served(testKey) != 3 {
				t.Fatalf("creates %d count %d served %d", creates, s.Count(testKey), s.Served(testKey))
			}
		})
	}
}

func TestRealtimeMalformedEvents(t *testing.T) {
	tests := []struct {
		name, msg, param, code string
		binary                 bool
	}{
		{name: "not JSON", msg: `{"type":`, code: "invalid_json"},
		{name: "binary", msg: `{"type":"session.update"}`, binary: true, code: "invalid_json"},
		{name: "no type", msg: `{"event_id":"e1"}`, param: "type", code: "missing_required_parameter"},
		{name: "unknown type", msg: `{"type":"bogus.event","event_id":"e2"}`, param: "type", code: "invalid_value"},
		{name: "update without session", msg: `{"type":"session.update"}`, param: "session", code: "missing_required_parameter"},
		{name: "GA update without session.type", msg: `{"type":"session.update","session":{"instructions":"x"}}`, param: "session.type", code: "missing_required_parameter"},
		{name: "item without type", msg: `{"type":"conversation.item.create","item":{}}`, param: "item.type", code: "missing_required_parameter"},
	}
	s := newServer(t, Options{})
	conn := mustDial(t, s, "/realtime?model=gpt-realtime", testKey, nil)
	readEvent(t, conn)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ := websocket.MessageText
			if tc.binary {
				typ = websocket.MessageBinary
			}
			if err := conn.Write(wsCtx(t), typ, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			ev := readEvent(t, conn)
			if ev.Type != "error" || ev.Error == nil || ev.Error.Type != "invalid_request_error" || ev.Error.Message == "" ||
				ev.Error.Code == nil || *ev.Error.Code != tc.code || (tc.param != "" && (ev.Error.Param == nil || *ev.Error.Param != tc.param)) {
				t.Fatalf("event %s", ev.raw)
			}
			var sent struct {
				EventID string `json:"event_id"`
			}
			if json.Unmarshal([]byte(tc.msg), &sent) == nil && sent.EventID != "" && (ev.Error.EventID == nil || *ev.Error.EventID != sent.EventID) {
				t.Fatalf("error.event_id in %s", ev.raw)
			}
			// The session stays open.
			sendWS(t, conn, `{"type":"session.update","session":{"type":"realtime"}}`)
			if ev := readEvent(t, conn); ev.Type != "session.updated" {
				t.Fatalf("after error: %s", ev.raw)
			}
		})
	}
}

func TestRealtimeTPM(t *testing.T) {
	const key = "sk-tpm-small-00000000000001"
	s := newServer(t, Options{})
	s.AddKey(key, KeyLimits{RPM: 60, TPM: 600}) // buckets of 1 request, 10 tokens
	conn := mustDial(t, s, "/realtime?model=gpt-realtime", key, nil)
	readEvent(t, conn)
	// 24 runes: 6 tokens, admitted (10 in the bucket), the bucket keeps 4.
	sendWS(t, conn, `{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"abcdefghijklmnopqrstuvwx"}]}}`)
	readUntil(t, conn, "conversation.item.done")
	sendWS(t, conn, `{"type":"response.create"}`)
	evs := readUntil(t, conn, "response.done", "error")
	if evs[len(evs)-1].Type != "response.done" {
		t.Fatalf("first response: %s", evs[len(evs)-1].raw)
	}
	if evs[1].Type != "rate_limits.updated" || !strings.Contains(string(evs[1].raw), `"name":"tokens"`) {
		t.Fatalf("second event %s", evs[1].raw)
	}
	// The next one needs more than the bucket holds (a session's RPM is
	// charged once: this is a tokens 429).
	sendWS(t, conn, `{"type":"response.create"}`)
	ev := readEvent(t, conn)
	if ev.Type != "error" || ev.Error == nil || ev.Error.Code == nil || *ev.Error.Code != "rate_limit_exceeded" || ev.Error.Type != "tokens" {
		t.Fatalf("second response: %s", ev.raw)
	}
	if s.RateLimited() != 1 {
		t.Fatalf("rate limited %d", s.RateLimited())
	}
	var statuses []int
	for _, r := range s.Records() {
		if r.Event == "response.create" {
			statuses = append(statuses, r.Status)
		}
	}
	if len(statuses) != 2 || statuses[0] != 200 || statuses[1] != 429 {
		t.Fatalf("statuses %v", statuses)
	}
}

func TestResponsesWebSocket(t *testing.T) {
	tests := []struct {
		name   string
		msg    string
		last   string // last event type
		status int    // error status
		code   string
	}{
		{name: "create", msg: `{"type":"response.create","model":"gpt-4o-mini","input":"hello there"}`, last: "response.completed"},
		{name: "store false", msg: `{"type":"response.create","model":"gpt-4o-mini","store":false,"input":"hello there"}`, last: "response.completed"},
		{name: "truncated", msg: `{"type":"response.create","model":"gpt-4o-mini","max_output_tokens":1,"input":"hello there"}`, last: "response.incomplete"},
		{name: "unknown model", msg: `{"type":"response.create","model":"gpt-nope","input":"x"}`, last: "error", status: 404, code: "model_not_found"},
		{name: "no model", msg: `{"type":"response.create","input":"x"}`, last: "error", status: 400},
		{name: "unknown previous", msg: `{"type":"response.create","model":"gpt-4o-mini","previous_response_id":"resp_nope","input":"x"}`, last: "error", status: 400, code: "previous_response_not_found"},
		{name: "unknown type", msg: `{"type":"response.bogus"}`, last: "error", status: 400, code: "invalid_value"},
		{name: "not JSON", msg: `nope`, last: "error", status: 400, code: "invalid_json"},
	}
	s := newServer(t, Options{StreamChunks: 2})
	conn := mustDial(t, s, "/responses", testKey, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sendWS(t, conn, tc.msg)
			evs := readUntil(t, conn, "response.completed", "response.incomplete", "error")
			last := evs[len(evs)-1]
			if last.Type != tc.last {
				t.Fatalf("events %v", eventTypes(evs))
			}
			if tc.status != 0 {
				if len(evs) != 1 || last.Status != tc.status || last.Error == nil || last.Error.Message == "" ||
					(tc.code != "" && (last.Error.Code == nil || *last.Error.Code != tc.code)) {
					t.Fatalf("error %s", last.raw)
				}
				return
			}
			if evs[0].Type != "response.created" || evs[1].Type != "response.in_progress" {
				t.Fatalf("events %v", eventTypes(evs))
			}
			var u struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
				TotalTokens  int `json:"total_tokens"`
			}
			if json.Unmarshal(last.Response.Usage, &u) != nil {
				t.Fatalf("usage %s", last.raw)
			}
			if u.InputTokens != 3 || u.TotalTokens != u.InputTokens+u.OutputTokens || u.OutputTokens == 0 {
				t.Fatalf("usage %+v", u)
			}
		})
	}
	// Continuing the connection's last response, which was not stored.
	sendWS(t, conn, `{"type":"response.create","model":"gpt-4o-mini","store":false,"input":"abcd"}`)
	evs := readUntil(t, conn, "response.completed", "error")
	if evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("events %v", eventTypes(evs))
	}
	lastID := evs[len(evs)-1].Response.ID
	sendWS(t, conn, `{"type":"response.create","model":"gpt-4o-mini","store":false,"previous_response_id":"`+lastID+`","input":"abcd"}`)
	evs = readUntil(t, conn, "response.completed", "error")
	if evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("continuation: %s", evs[len(evs)-1].raw)
	}
	var creates int
	for _, r := range s.Records() {
		if r.Event == "response.create" {
			creates++
		}
	}
	if creates != len(tests)-2+2 { // the unknown type and the non-JSON message are no response.create
		t.Fatalf("response.create records %d", creates)
	}
}

func TestResponsesWebSocketRateLimit(t *testing.T) {
	const key = "sk-rpm-ws-0000000000000001"
	s := newServer(t, Options{})
	s.AddKey(key, KeyLimits{RPM: 60}) // a bucket of 1 request
	conn := mustDial(t, s, "/responses", key, nil)
	sendWS(t, conn, `{"type":"response.create","model":"gpt-4o-mini","input":"hi"}`)
	if evs := readUntil(t, conn, "response.completed", "error"); evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("first: %s", evs[len(evs)-1].raw)
	}
	sendWS(t, conn, `{"type":"response.create","model":"gpt-4o-mini","input":"hi"}`)
	ev := readEvent(t, conn)
	if ev.Type != "error" || ev.Status != 429 || ev.Error == nil || ev.Error.Code == nil || *ev.Error.Code != "rate_limit_exceeded" || ev.Error.Type != "requests" {
		t.Fatalf("second: %s", ev.raw)
	}
}

func TestWebSocketCloseAndDrop(t *testing.T) {
	s := newServer(t, Options{})
	s.AddFault(Fault{DropAfter: 3, Path: "/realtime", Count: 1})
	conn := mustDial(t, s, "/realtime?model=gpt-realtime", testKey, nil)
	readEvent(t, conn) // 1: session.created
	sendWS(t, conn, `{"type":"response.create"}`)
	readEvent(t, conn) // 2: response.created
	readEvent(t, conn) // 3: the last before the drop
	if _, _, err := conn.Read(wsCtx(t)); err == nil {
		t.Fatal("read after the drop")
	}
	// Close cuts open sessions.
	conn = mustDial(t, s, "/realtime?model=gpt-realtime", testKey, nil)
	readEvent(t, conn)
	s.Close()
	if _, _, err := conn.Read(wsCtx(t)); err == nil {
		t.Fatal("read after Close")
	}
}

// The official Go SDK (openai-go v3.98.0: realtime.RealtimeService.Connect,
// BetaResponseService.Connect) decodes the fake's sessions with its typed
// events.
func TestWebSocketOpenAIGo(t *testing.T) {
	s := newServer(t, Options{})
	client := openai.NewClient(option.WithBaseURL(s.URL()+"/"), option.WithAPIKey(testKey), option.WithMaxRetries(0))
	ctx := wsCtx(t)

	rt, err := client.Realtime.Connect(ctx, realtime.RealtimeConnectionOptions{}, option.WithQuery("model", "gpt-realtime"))
	if err != nil {
		t.Fatalf("realtime connect: %v", err)
	}
	defer rt.Abort()
	ev, err := rt.Recv(ctx)
	if err != nil || ev.Type != "session.created" {
		t.Fatalf("first: %v %v", ev.Type, err)
	}
	if sess := ev.AsSessionCreatedEvent().Session.AsRealtimeSessionCreateRequest(); sess.Model != "gpt-realtime" || sess.Type != "realtime" {
		t.Fatalf("session %s", ev.RawJSON())
	}
	if err := rt.SendRaw(ctx, json.RawMessage(`{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi sdk"}]}}`)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Send(ctx, realtime.RealtimeClientEventUnionParam{OfResponseCreate: &realtime.ResponseCreateEventParam{}}); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for {
		ev, err := rt.Recv(ctx)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.AsResponseTextDeltaEvent().Delta)
		case "error":
			t.Fatalf("error %s", ev.RawJSON())
		}
		if ev.Type != "response.done" {
			continue
		}
		r := ev.AsResponseDoneEvent().Response
		if r.Status != "completed" || r.Usage.InputTokens != 2 || r.Usage.OutputTokens != 3 || r.Usage.TotalTokens != 5 ||
			r.Usage.InputTokenDetails.TextTokens != 2 || r.Usage.OutputTokenDetails.TextTokens != 3 || len(r.Output) != 1 {
			t.Fatalf("response.done %s", ev.RawJSON())
		}
		break
	}
	if text.String() != "echo: hi sdk" {
		t.Fatalf("text %q", text.String())
	}

	rs, err := client.Beta.Responses.Connect(ctx, openai.BetaResponseConnectionOptions{})
	if err != nil {
		t.Fatalf("responses connect: %v", err)
	}
	defer rs.Abort()
	if err := rs.SendRaw(ctx, json.RawMessage(`{"type":"response.create","model":"gpt-4o-mini","input":"hi sdk"}`)); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := rs.Recv(ctx)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if ev.Type == "error" {
			t.Fatalf("error %s", ev.RawJSON())
		}
		if ev.Type == "response.completed" {
			if u := ev.AsResponseCompleted().Response.Usage; u.InputTokens != 2 || u.OutputTokens != 3 || u.TotalTokens != 5 {
				t.Fatalf("completed %s", ev.RawJSON())
			}
			break
		}
	}
}
