package fakeopenai

// WebSocket endpoints: the Realtime API (GET /v1/realtime?model=…) and the
// Responses API's WebSocket mode (GET /v1/responses).
//
// # Opening
//
// The upgrade is authenticated and refused like every request, before the
// upgrade, with the API's JSON error and status: the key comes from
// Authorization: Bearer, or, as browsers cannot set headers, from the
// subprotocol list "realtime, openai-insecure-api-key.<key>[,
// openai-beta.realtime-v1]" (the server selects "realtime"). Faults apply
// to upgrades as to requests (a DropAfter fault closes the socket after that
// many server events of the session). The 101 carries x-request-id,
// openai-project and the x-ratelimit-* headers.
//
// A Realtime session needs a served model (400 without one, 404
// model_not_found for an unknown one, then the project/verification 403s)
// and counts as one request: it is admitted against the key's RPM bucket
// (and 0 tokens) when it opens, 429 before the upgrade when the bucket is
// empty. Each response.create is then charged its tokens only. A Responses
// WebSocket is admitted free; each response.create is charged as a POST
// /v1/responses (one request and its tokens).
//
// # Records
//
// The accepted upgrade is recorded when it happens (Status 101, Stream
// true, Model the query's model for Realtime), and each response.create of
// either kind gets its own Record (Event "response.create", Body the client
// event, Status 200 or the status of its error event) and counts in Count
// and, when answered, in Served.
//
// # Realtime events
//
// The shapes follow openai-go v3.98.0's realtime package (realtime/realtime.go:
// SessionCreatedEvent, SessionUpdatedEvent, RealtimeSessionCreateRequest,
// ConversationItemAdded/Done, ResponseCreatedEvent, ResponseTextDeltaEvent,
// ResponseTextDoneEvent, ResponseOutputItemAddedEvent,
// ResponseContentPartAddedEvent, ResponseDoneEvent with RealtimeResponse and
// RealtimeResponseUsage{,InputTokenDetails,OutputTokenDetails},
// RealtimeErrorEvent/RealtimeError) and the API reference's server events
// ("session.created … emitted automatically when a new connection is
// established as the first server event"; "most errors are recoverable and
// the session will stay open"). Without the beta header (OpenAI-Beta:
// realtime=v1, or the openai-beta.realtime-v1 subprotocol) the session
// speaks the GA protocol: session.type "realtime", output_modalities,
// conversation.item.added + conversation.item.done,
// response.output_text.delta/done. With it, the beta protocol's names:
// modalities, voice, conversation.item.created, response.text.delta/done.
//
// Client events: session.update (merged into the session, answered with
// session.updated; GA requires session.type), conversation.item.create
// (added to the conversation), response.create (optional "response" with
// instructions, max_output_tokens, conversation "none", input items) and,
// accepted silently, the audio buffer and cancellation events. Anything else,
// or a message that is not a JSON object with a type, gets an error event
// (invalid_request_error) and the session stays open.
//
// A response replies "echo: " + the text of the last user message of its
// context (the conversation, or the response's input items), always as text
// (no audio is synthesised, whatever the modalities), in StreamChunks deltas
// (ChunkDelay before each). Its usage: input_tokens = ceil(runes/4) over the
// instructions and every text of the context (input_text, text, output_text
// parts and transcripts), all text tokens, cached 0; output_tokens = the
// reply's words (capped at max_output_tokens); the TPM cost is input plus
// the max_output_tokens allowance (0 for "inf"). After response.created comes
// rate_limits.updated when the key has limits. The assistant item joins the
// conversation unless conversation is "none".
//
// # Responses WebSocket mode
//
// Each {"type":"response.create", …the create body…} is served as POST
// /v1/responses with "stream": true (stream and background are transport
// fields the socket ignores), so the socket carries exactly the events of
// the HTTP stream, from response.created to response.completed (or
// response.incomplete), one JSON message each; refusals (400s, 404, 429
// rate_limit_exceeded…) are an error event {"type":"error","status":…,
// "error":{type,code,message,param}} and the socket stays open. The shape is
// openai-go v3.98.0's BetaResponsesServerEventBetaResponseWsError
// (betaresponse.go); the mode is OpenAI's guide
// developers.openai.com/api/docs/guides/websocket-mode and the API
// reference's "Connect" (WebSocket wss://api.openai.com/v1/responses, Bearer
// auth). As in the guide, previous_response_id may name the connection's
// most recent response even when it was not stored (store: false).

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/net/http/httpguts"
)

const msgNeedUpgrade = "This endpoint requires a WebSocket connection (Upgrade: websocket)."

// isWebSocketUpgrade reports whether r asks for a WebSocket (RFC 6455 §4.1).
func isWebSocketUpgrade(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") && httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

const subprotoKeyPrefix = "openai-insecure-api-key."

// subprotocolKey is the key a browser passes in the subprotocol list.
func subprotocolKey(r *http.Request) string {
	for _, v := range r.Header.Values("Sec-Websocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if k, ok := strings.CutPrefix(strings.TrimSpace(p), subprotoKeyPrefix); ok {
				return strings.TrimSpace(k)
			}
		}
	}
	return ""
}

// realtimeBeta: the client asked for the beta Realtime protocol.
func realtimeBeta(r *http.Request) bool {
	if httpguts.HeaderValuesContainsToken(r.Header["Openai-Beta"], "realtime=v1") {
		return true
	}
	return httpguts.HeaderValuesContainsToken(r.Header["Sec-Websocket-Protocol"], "openai-beta.realtime-v1")
}

// wsConn is the server side of one WebSocket session.
type wsConn struct {
	conn *websocket.Conn
	ctx  context.Context
	ep   endpoint
	beta bool
	drop int // close the socket after this many server messages (a DropAfter fault)
	sent int
	ok   bool

	clientEventID string // Realtime: event_id of the client event being answered
	// streamID is, in Responses mode, the stream_id of the response.create
	// being answered: every event of its response and its error carry it
	// (openai-go v3.102 ResponsesServerEventResponseWs*.StreamID: "present
	// when the originating response.create event supplied a stream_id").
	streamID string
	last     *storedResponse // Responses mode: the connection's most recent response
}

func (w *wsConn) send(b []byte) bool {
	if !w.ok {
		return false
	}
	if err := w.conn.Write(w.ctx, websocket.MessageText, b); err != nil {
		w.ok = false
		return false
	}
	w.sent++
	if w.drop > 0 && w.sent >= w.drop {
		_ = w.conn.CloseNow()
		w.ok = false
		return false
	}
	return true
}

func (w *wsConn) sendJSON(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		w.ok = false
		return false
	}
	return w.send(b)
}

// remember keeps the connection's latest finished response, which
// previous_response_id may name even when it was not stored.
func (w *wsConn) remember(r *responseObj) { w.last = &storedResponse{resp: *r} }

type rtError struct {
	Type    string  `json:"type"`
	Code    *string `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	EventID *string `json:"event_id"`
}

// sendError sends the API's error event for status/msg/typ/param/code.
func (w *wsConn) sendError(status int, msg, typ string, param, code *string) {
	if w.ep == epRealtime {
		e := rtError{Type: typ, Code: code, Message: msg, Param: param}
		if w.clientEventID != "" {
			e.EventID = strp(w.clientEventID)
		}
		w.sendJSON(map[string]any{"type": "error", "event_id": rtEventID(), "error": e})
		return
	}
	ev := map[string]any{"type": "error", "status": status, "error": apiError{Message: msg, Type: typ, Param: param, Code: code}}
	if w.streamID != "" {
		ev["stream_id"] = w.streamID
	}
	w.sendJSON(ev)
}

func rtEventID() string { return newID("event_", 21) }

// serveWebSocket admits and upgrades an authenticated WebSocket request,
// then runs its session until the client goes.
func (c *call) serveWebSocket(ep endpoint, drop int) {
	s := c.s
	if ep == epRealtime {
		if !c.checkModel() || !c.realtimeModel() || !c.admitN(1, 0) {
			return
		}
	} else if s.rlHeaders {
		snap := c.key.snapshot(s.now())
		c.rl = &snap
	}
	c.commonHeaders()
	opts := &websocket.AcceptOptions{InsecureSkipVerify: true} // the API takes any Origin
	if ep == epRealtime {
		opts.Subprotocols = []string{"realtime"}
	}
	conn, err := websocket.Accept(c.w, c.r, opts)
	if err != nil { // Accept has answered (a malformed handshake)
		c.status = http.StatusBadRequest
		return
	}
	defer conn.CloseNow()
	c.status = http.StatusSwitchingProtocols
	s.finish(c) // recorded now: a test may count open sessions
	c.recorded = true
	conn.SetReadLimit(maxBody)
	ws := &wsConn{conn: conn, ctx: c.r.Context(), ep: ep, beta: realtimeBeta(c.r), drop: drop, ok: true}
	s.trackWS(conn, true)
	defer s.trackWS(conn, false)
	if ep == epRealtime {
		c.realtimeSession(ws)
	} else {
		c.responsesSession(ws)
	}
	if ws.ok {
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
}

// trackWS keeps the open sessions, which Close cuts.
func (s *Server) trackWS(conn *websocket.Conn, open bool) {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	if !open {
		delete(s.wsConns, conn)
		return
	}
	if s.wsConns == nil {
		s.wsConns = map[*websocket.Conn]struct{}{}
	}
	s.wsConns[conn] = struct{}{}
}

func (s *Server) closeWebSockets() {
	s.wsMu.Lock()
	conns := make([]*websocket.Conn, 0, len(s.wsConns))
	for conn := range s.wsConns {
		conns = append(conns, conn)
	}
	s.wsMu.Unlock()
	for _, conn := range conns {
		_ = conn.CloseNow()
	}
}

// checkModel validates c.model as the model endpoints do, answering the
// error itself.
func (c *call) checkModel() bool {
	switch {
	case c.model == "":
		c.fail(http.StatusBadRequest, "Missing required parameter: 'model'.", "invalid_request_error", strp("model"), strp("missing_required_parameter"))
	case !c.served(c.model):
		c.fail(http.StatusNotFound, "The model `"+c.model+"` does not exist or you do not have access to it.", "invalid_request_error", nil, strp("model_not_found"))
	case !c.access.allowsModel(c.model):
		c.fail(http.StatusForbidden, projectModelMessage(c.project, c.model), "invalid_request_error", nil, strp("model_not_found"))
	case c.gated(c.model):
		c.fail(http.StatusForbidden, verifyOrgMessage(c.model), "invalid_request_error", nil, nil)
	default:
		return true
	}
	return false
}

// realtimeModel refuses a session for a model that is served but not a
// realtime one, as the API does: it answers such a connection with
// invalid_model "not supported in realtime mode" (seen reported against
// api.openai.com in hurttlocker/o8#2165, for POST /v1/realtime/client_secrets
// tokens whose model the realtime endpoint then refused). Realtime models
// are those whose name says so (gpt-realtime, gpt-4o-realtime-preview,
// gpt-realtime-mini, …).
func (c *call) realtimeModel() bool {
	if strings.Contains(c.model, "realtime") {
		return true
	}
	c.fail(http.StatusBadRequest, "Model \""+c.model+"\" is not supported in realtime mode.", "invalid_request_error", strp("model"), strp("invalid_model"))
	return false
}

func (c *call) served(model string) bool { _, ok := c.s.models[model]; return ok }

func (c *call) gated(model string) bool {
	_, gated := c.s.verifyOrg[model]
	return gated && !c.access.verified
}

// previousResponse finds previous_response_id: a stored response of the
// project or, on a Responses WebSocket, the connection's latest response.
func (c *call) previousResponse(id string) *storedResponse {
	if prev := c.s.lookupResponse(id, c.project); prev != nil {
		return prev
	}
	if c.ws != nil && c.ws.last != nil && c.ws.last.resp.ID == id {
		return c.ws.last
	}
	return nil
}

// eventCall is the call of one client event of a session, recorded and
// counted on its own.
func (c *call) eventCall(ws *wsConn, event string, body []byte) *call {
	c.key.count.Add(1)
	return &call{s: c.s, r: c.r, start: c.s.now(), reqID: newID("req_", 32), secret: c.secret, key: c.key,
		access: c.access, project: c.project, model: c.model, stream: true, body: body, ws: ws, event: event}
}

// recordEvent records the call of a client event now, before its last
// server event goes (a client that has it may look at the records).
func (c *call) recordEvent() {
	if !c.recorded {
		c.s.finish(c)
		c.recorded = true
	}
}

// clientEvent reads the envelope of a client message; on a malformed one it
// sends the error event and returns "".
func (ws *wsConn) clientEvent(typ websocket.MessageType, data []byte) string {
	var env struct {
		Type     *string `json:"type"`
		EventID  string  `json:"event_id"`
		StreamID string  `json:"stream_id"`
	}
	ws.clientEventID, ws.streamID = "", ""
	if typ != websocket.MessageText || json.Unmarshal(data, &env) != nil {
		ws.sendError(http.StatusBadRequest, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", "invalid_request_error", nil, strp("invalid_json"))
		return ""
	}
	ws.clientEventID = env.EventID
	if ws.ep != epRealtime {
		ws.streamID = env.StreamID
	}
	if env.Type == nil || *env.Type == "" {
		ws.sendError(http.StatusBadRequest, "Missing required parameter: 'type'.", "invalid_request_error", strp("type"), strp("missing_required_parameter"))
		return ""
	}
	return *env.Type
}

func (ws *wsConn) invalidType(t string, supported string) {
	ws.sendError(http.StatusBadRequest, "Invalid value: '"+t+"'. Supported values are: "+supported+".", "invalid_request_error", strp("type"), strp("invalid_value"))
}

// ---- Responses WebSocket mode ----

func (c *call) responsesSession(ws *wsConn) {
	for ws.ok {
		typ, data, err := ws.conn.Read(ws.ctx)
		if err != nil {
			return
		}
		t := ws.clientEvent(typ, data)
		switch t {
		case "":
		case "response.create":
			ec := c.eventCall(ws, t, data)
			var req apiRequest
			perr := json.Unmarshal(data, &req)
			if req.Model != nil {
				ec.model = *req.Model
			}
			req.Stream = true
			ec.serveModel(epResponses, &req, perr, audioForm{}, 0)
			c.s.finish(ec)
		default:
			ws.invalidType(t, "'response.create'")
		}
	}
}

// ---- Realtime ----

// rtItem is a conversation item: its JSON as the server shows it, and the
// text the fake counts and echoes.
type rtItem struct {
	obj  map[string]any
	role string
	text string
}

type rtSession struct {
	c        *call
	ws       *wsConn
	id       string
	conv     string
	session  map[string]any
	items    []rtItem
	msgParts string // content part type of assistant text: output_text (GA), text (beta)
}

func (c *call) realtimeSession(ws *wsConn) {
	rs := &rtSession{c: c, ws: ws, id: newID("sess_", 21), conv: newID("conv_", 21), msgParts: "output_text"}
	if ws.beta {
		rs.msgParts = "text"
	}
	rs.session = rs.defaultSession()
	if !ws.sendJSON(map[string]any{"type": "session.created", "event_id": rtEventID(), "session": rs.session}) {
		return
	}
	for ws.ok {
		typ, data, err := ws.conn.Read(ws.ctx)
		if err != nil {
			return
		}
		switch t := ws.clientEvent(typ, data); t {
		case "":
		case "session.update":
			rs.update(data)
		case "conversation.item.create":
			rs.createItem(data)
		case "response.create":
			rs.respond(data)
		case "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
			"output_audio_buffer.clear", "response.cancel", "conversation.item.delete",
			"conversation.item.retrieve", "conversation.item.truncate":
			// accepted, not modelled
		default:
			ws.invalidType(t, "'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.retrieve', 'conversation.item.truncate', 'conversation.item.delete', 'response.create', 'response.cancel', 'output_audio_buffer.clear'")
		}
	}
}

// defaultSession is the session of session.created: GA
// (RealtimeSessionCreateRequest of openai-go's realtime package, plus id,
// object, expires_at) or beta.
func (rs *rtSession) defaultSession() map[string]any {
	now := rs.c.s.now().Unix()
	vad := map[string]any{"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200,
		"create_response": true, "interrupt_response": true}
	s := map[string]any{
		"id": rs.id, "object": "realtime.session", "model": rs.c.model, "expires_at": now + 3600,
		"instructions": "", "tools": []any{}, "tool_choice": "auto", "tracing": nil,
	}
	if rs.ws.beta {
		s["modalities"] = []string{"text", "audio"}
		s["voice"] = "alloy"
		s["input_audio_format"] = "pcm16"
		s["output_audio_format"] = "pcm16"
		s["input_audio_transcription"] = nil
		s["turn_detection"] = vad
		s["temperature"] = 0.8
		s["max_response_output_tokens"] = "inf"
		return s
	}
	pcm := map[string]any{"type": "audio/pcm", "rate": 24000}
	s["type"] = "realtime"
	s["output_modalities"] = []string{"audio"}
	s["max_output_tokens"] = "inf"
	s["truncation"] = "auto"
	s["prompt"] = nil
	s["include"] = nil
	s["audio"] = map[string]any{
		"input":  map[string]any{"format": pcm, "transcription": nil, "noise_reduction": nil, "turn_detection": vad},
		"output": map[string]any{"format": pcm, "voice": "alloy", "speed": 1.0},
	}
	return s
}

var readOnlySession = map[string]bool{"id": true, "object": true, "expires_at": true}

func (rs *rtSession) update(data []byte) {
	var ev struct {
		Session map[string]any `json:"session"`
	}
	if json.Unmarshal(data, &ev) != nil {
		rs.ws.sendError(http.StatusBadRequest, "Invalid type for 'session': expected an object.", "invalid_request_error", strp("session"), strp("invalid_type"))
		return
	}
	if ev.Session == nil {
		rs.ws.sendError(http.StatusBadRequest, "Missing required parameter: 'session'.", "invalid_request_error", strp("session"), strp("missing_required_parameter"))
		return
	}
	if !rs.ws.beta {
		if t, _ := ev.Session["type"].(string); t == "" {
			rs.ws.sendError(http.StatusBadRequest, "Missing required parameter: 'session.type'.", "invalid_request_error", strp("session.type"), strp("missing_required_parameter"))
			return
		} else if t != "realtime" && t != "transcription" {
			rs.ws.sendError(http.StatusBadRequest, "Invalid value: '"+t+"'. Supported values are: 'realtime' and 'transcription'.", "invalid_request_error", strp("session.type"), strp("invalid_value"))
			return
		}
	}
	for k, v := range ev.Session {
		if !readOnlySession[k] {
			rs.session[k] = v
		}
	}
	rs.ws.sendJSON(map[string]any{"type": "session.updated", "event_id": rtEventID(), "session": rs.session})
}

// parseItem reads a client conversation item.
func parseItem(raw map[string]any) rtItem {
	it := rtItem{obj: map[string]any{}}
	for k, v := range raw {
		it.obj[k] = v
	}
	if id, _ := it.obj["id"].(string); id == "" {
		it.obj["id"] = newID("item_", 21)
	}
	it.obj["object"] = "realtime.item"
	if _, ok := it.obj["status"]; !ok {
		it.obj["status"] = "completed"
	}
	it.role, _ = it.obj["role"].(string)
	var b strings.Builder
	if parts, ok := it.obj["content"].([]any); ok {
		for _, p := range parts {
			pm, _ := p.(map[string]any)
			for _, f := range []string{"text", "transcript"} {
				if t, ok := pm[f].(string); ok {
					b.WriteString(t)
				}
			}
		}
	}
	for _, f := range []string{"output", "arguments"} {
		if t, ok := it.obj[f].(string); ok {
			b.WriteString(t)
		}
	}
	it.text = b.String()
	return it
}

func (rs *rtSession) prevItemID() any {
	if n := len(rs.items); n > 0 {
		return rs.items[n-1].obj["id"]
	}
	return nil
}

// added announces an item joining the conversation.
func (rs *rtSession) added(it rtItem) bool {
	prev := rs.prevItemID()
	rs.items = append(rs.items, it)
	if rs.ws.beta {
		return rs.ws.sendJSON(map[string]any{"type": "conversation.item.created", "event_id": rtEventID(), "previous_item_id": prev, "item": it.obj})
	}
	return rs.ws.sendJSON(map[string]any{"type": "conversation.item.added", "event_id": rtEventID(), "previous_item_id": prev, "item": it.obj}) &&
		rs.ws.sendJSON(map[string]any{"type": "conversation.item.done", "event_id": rtEventID(), "previous_item_id": prev, "item": it.obj})
}

func (rs *rtSession) createItem(data []byte) {
	var ev struct {
		Item map[string]any `json:"item"`
	}
	if json.Unmarshal(data, &ev) != nil || ev.Item == nil {
		rs.ws.sendError(http.StatusBadRequest, "Missing required parameter: 'item'.", "invalid_request_error", strp("item"), strp("missing_required_parameter"))
		return
	}
	if t, _ := ev.Item["type"].(string); t == "" {
		rs.ws.sendError(http.StatusBadRequest, "Missing required parameter: 'item.type'.", "invalid_request_error", strp("item.type"), strp("missing_required_parameter"))
		return
	}
	rs.added(parseItem(ev.Item))
}

// tokenLimit reads max_output_tokens ("inf" or an integer) as an allowance,
// 0 for none.
func tokenLimit(v any) int {
	if f, ok := v.(float64); ok && f > 0 {
		return int(f)
	}
	return 0
}

type rtUsage struct {
	TotalTokens       int `json:"total_tokens"`
	InputTokens       int `json:"input_tokens"`
	OutputTokens      int `json:"output_tokens"`
	InputTokenDetails struct {
		CachedTokens        int `json:"cached_tokens"`
		TextTokens          int `json:"text_tokens"`
		AudioTokens         int `json:"audio_tokens"`
		ImageTokens         int `json:"image_tokens"`
		CachedTokensDetails struct {
			TextTokens  int `json:"text_tokens"`
			AudioTokens int `json:"audio_tokens"`
			ImageTokens int `json:"image_tokens"`
		} `json:"cached_tokens_details"`
	} `json:"input_token_details"`
	OutputTokenDetails struct {
		TextTokens  int `json:"text_tokens"`
		AudioTokens int `json:"audio_tokens"`
	} `json:"output_token_details"`
}

func (rs *rtSession) respond(data []byte) {
	c, ws := rs.c, rs.ws
	ec := c.eventCall(ws, "response.create", data)
	defer c.s.finish(ec)
	var ev struct {
		Response *struct {
			Instructions    *string          `json:"instructions"`
			MaxOutputTokens any              `json:"max_output_tokens"`
			Conversation    *string          `json:"conversation"`
			Input           []map[string]any `json:"input"`
			Metadata        map[string]any   `json:"metadata"`
		} `json:"response"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		ec.fail(http.StatusBadRequest, "Invalid type for 'response': expected an object.", "invalid_request_error", strp("response"), strp("invalid_type"))
		return
	}
	instructions, _ := rs.session["instructions"].(string)
	maxKey := "max_output_tokens"
	if ws.beta {
		maxKey = "max_response_output_tokens"
	}
	allow := tokenLimit(rs.session[maxKey])
	ctxItems := rs.items
	inConversation := true
	var metadata any
	if r := ev.Response; r != nil {
		if r.Instructions != nil {
			instructions = *r.Instructions
		}
		if r.MaxOutputTokens != nil {
			allow = tokenLimit(r.MaxOutputTokens)
		}
		if r.Conversation != nil && *r.Conversation == "none" {
			inConversation = false
		}
		if r.Input != nil {
			ctxItems = make([]rtItem, len(r.Input))
			for i, raw := range r.Input {
				ctxItems[i] = parseItem(raw)
			}
		}
		if r.Metadata != nil {
			metadata = r.Metadata
		}
	}
	runes := utf8.RuneCountInString(instructions)
	last := ""
	for _, it := range ctxItems {
		runes += utf8.RuneCountInString(it.text)
		if it.role == "user" {
			last = it.text
		}
	}
	prompt := (runes + 3) / 4
	cost := prompt + allow
	if !ec.admitN(0, cost) {
		return
	}
	text, completion, trunc := reply(last, allow)
	status := "completed"
	var statusDetails any
	if trunc {
		status, statusDetails = "incomplete", map[string]any{"type": "incomplete", "reason": "max_output_tokens"}
	}
	var usage rtUsage
	usage.InputTokens, usage.OutputTokens, usage.TotalTokens = prompt, completion, prompt+completion
	usage.InputTokenDetails.TextTokens = prompt
	usage.OutputTokenDetails.TextTokens = completion

	respID := newID("resp_", 21)
	conv := any(rs.conv)
	if !inConversation {
		conv = nil
	}
	resp := map[string]any{
		"id": respID, "object": "realtime.response", "status": "in_progress", "status_details": nil,
		"output": []any{}, "conversation_id": conv, "usage": nil, "metadata": metadata,
	}
	maxOut := any("inf")
	if allow > 0 {
		maxOut = allow
	}
	resp["max_output_tokens"] = maxOut
	if ws.beta {
		resp["modalities"] = rs.session["modalities"]
		resp["voice"] = "alloy"
		resp["output_audio_format"] = "pcm16"
		resp["temperature"] = rs.session["temperature"]
	} else {
		resp["output_modalities"] = rs.session["output_modalities"]
		resp["audio"] = map[string]any{"output": map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}}
	}
	ec.status = http.StatusOK
	send := func(v map[string]any) bool {
		v["event_id"] = rtEventID()
		return ws.sendJSON(v)
	}
	if !send(map[string]any{"type": "response.created", "response": cloneMap(resp)}) {
		return
	}
	if rl := rateLimitsEvent(ec.rl); rl != nil && !send(map[string]any{"type": "rate_limits.updated", "rate_limits": rl}) {
		return
	}
	itemID := newID("item_", 21)
	item := map[string]any{"id": itemID, "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}
	if !send(map[string]any{"type": "response.output_item.added", "response_id": respID, "output_index": 0, "item": cloneMap(item)}) {
		return
	}
	prevItem := rs.prevItemID()
	if inConversation {
		name := "conversation.item.added"
		if ws.beta {
			name = "conversation.item.created"
		}
		if !send(map[string]any{"type": name, "previous_item_id": prevItem, "item": cloneMap(item)}) {
			return
		}
	}
	// The content_part events' part is "text" or "audio" in both
	// protocols (openai-node resources/realtime ResponseContentPartAddedEvent
	// .part.type, openai-python types/realtime
	// response_content_part_added_event.py Literal["text", "audio"]); the
	// item's own content is output_text in GA (msgParts).
	part := map[string]any{"type": "text", "text": ""}
	loc := func(v map[string]any) map[string]any {
		v["response_id"], v["item_id"], v["output_index"], v["content_index"] = respID, itemID, 0, 0
		return v
	}
	if !send(loc(map[string]any{"type": "response.content_part.added", "part": part})) {
		return
	}
	deltaName, doneName := "response.output_text.delta", "response.output_text.done"
	if ws.beta {
		deltaName, doneName = "response.text.delta", "response.text.done"
	}
	for _, p := range split(text, c.s.opts.StreamChunks) {
		if !sleep(c.r, c.s.opts.ChunkDelay) || !send(loc(map[string]any{"type": deltaName, "delta": p})) {
			return
		}
	}
	item["status"], item["content"] = status, []any{map[string]any{"type": rs.msgParts, "text": text}}
	if !send(loc(map[string]any{"type": doneName, "text": text})) ||
		!send(loc(map[string]any{"type": "response.content_part.done", "part": map[string]any{"type": "text", "text": text}})) ||
		!send(map[string]any{"type": "response.output_item.done", "response_id": respID, "output_index": 0, "item": item}) {
		return
	}
	if inConversation {
		rs.items = append(rs.items, rtItem{obj: item, role: "assistant", text: text})
		if !ws.beta && !send(map[string]any{"type": "conversation.item.done", "previous_item_id": prevItem, "item": item}) {
			return
		}
	}
	resp["status"], resp["status_details"], resp["output"], resp["usage"] = status, statusDetails, []any{item}, usage
	ec.recordEvent()
	if !send(map[string]any{"type": "response.done", "response": resp}) {
		return
	}
	if c.s.opts.RefundUnusedTokens {
		c.key.refund(c.s.now(), cost-usage.TotalTokens)
	}
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// rateLimitsEvent is the rate_limits of a rate_limits.updated event
// (openai-go realtime RateLimitsUpdatedEvent: name, limit, remaining,
// reset_seconds), nil when the key has no limits.
func rateLimitsEvent(rl *rlSnapshot) []map[string]any {
	if rl == nil {
		return nil
	}
	var out []map[string]any
	if rl.rpmLimit > 0 {
		out = append(out, map[string]any{"name": "requests", "limit": rl.rpmLimit, "remaining": rl.rpmRemaining, "reset_seconds": rl.rpmReset.Seconds()})
	}
	if rl.tpmLimit > 0 {
		out = append(out, map[string]any{"name": "tokens", "limit": rl.tpmLimit, "remaining": rl.tpmRemaining, "reset_seconds": rl.tpmReset.Seconds()})
	}
	return out
}

// OpenWebSockets is the number of WebSocket sessions open now.
func (s *Server) OpenWebSockets() int {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return len(s.wsConns)
}
