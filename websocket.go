package openairelay

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddyrelay/openairelay/internal/wsframe"
)

// The WebSocket stage: GET /v1/realtime (the Realtime API) and GET
// /v1/responses upgraded (the Responses API's WebSocket mode) are sessions,
// not requests. The client is authenticated as for every request
// (authenticate.go; browsers pass the key in the subprotocol
// openai-insecure-api-key.<key>, see clientSecret), then:
//
//   - Realtime: the model (the query's) is checked like a request's, a key
//     is chosen by the pool (the session is one request of 0 tokens on it
//     and holds one of its concurrency slots while it is open), and the
//     upstream is dialled through the upstream's transport, with retries on
//     other keys as for a request, before the client's upgrade is answered:
//     an upstream's refusal reaches the client as its status and JSON body.
//   - Responses: the upgrade is answered at once, and the upstream dialled
//     for the first response.create, whose model routes the session; a
//     refusal then is an error event, and the socket stays open.
//
// From then on wssession.go carries the messages both ways and accounts
// every response on the session's key and client.

// isWebSocketUpgrade reports whether r asks for a WebSocket (RFC 6455 §4.1).
func isWebSocketUpgrade(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") && httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// subprotocolKeyPrefix marks the subprotocol in which a browser passes its
// API key (the Realtime API's WebSocket guide: browsers cannot set headers).
const subprotocolKeyPrefix = "openai-insecure-api-key."

// subprotocols is the client's Sec-WebSocket-Protocol list.
func subprotocols(h http.Header) []string {
	var out []string
	for _, v := range h["Sec-Websocket-Protocol"] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// subprotocolSecret is the key a client passes in its subprotocol list.
func subprotocolSecret(h http.Header) string {
	for _, p := range subprotocols(h) {
		if k, ok := strings.CutPrefix(p, subprotocolKeyPrefix); ok {
			return k
		}
	}
	return ""
}

// upstreamSubprotocols is the client's list without its key: the upstream
// gets the key's credentials in the header instead.
func upstreamSubprotocols(h http.Header) []string {
	var out []string
	for _, p := range subprotocols(h) {
		if !strings.HasPrefix(p, subprotocolKeyPrefix) {
			out = append(out, p)
		}
	}
	return out
}

// wsUpgrade is what the relay keeps of a client's upgrade request.
type wsUpgrade struct {
	realtime bool
	// upKey is the Sec-WebSocket-Key of the relay's own handshake with the
	// upstream (each leg has its own).
	upKey string
}

// serveWebSocket checks a client's upgrade and opens its session. Every
// refusal before the upgrade is an OpenAI error with its status.
func (rl *Relay) serveWebSocket(w http.ResponseWriter, r *http.Request, client *Client, repl *caddy.Replacer) {
	endpoint, ok := apiEndpoint(r.URL.Path)
	if !ok || (endpoint != "realtime" && endpoint != "responses") {
		(&apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "websocket_not_supported",
			Message: "Only /v1/realtime and /v1/responses take WebSocket connections, not " + truncateForMessage(r.URL.Path) + "."}).write(w)
		return
	}
	switch {
	case r.Method != http.MethodGet:
		(&apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "A WebSocket upgrade is a GET request."}).write(w)
		return
	case r.ProtoMajor != 1:
		(&apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "websocket_http1_only",
			Message: "WebSocket sessions are relayed over HTTP/1.1 upgrades only."}).write(w)
		return
	case r.Header.Get("Sec-Websocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		(&apiError{Status: http.StatusUpgradeRequired, Type: "invalid_request_error", Code: "websocket_version",
			Message: "Unsupported WebSocket version: this relay speaks version 13 (RFC 6455)."}).write(w)
		return
	case !wsframe.ValidKey(r.Header.Get("Sec-Websocket-Key")):
		errBadRequest("The WebSocket handshake has no valid Sec-WebSocket-Key.", "").write(w)
		return
	case !client.allowsEndpoint(endpoint):
		(&apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "endpoint_not_allowed",
			Message: "This client may not call " + truncateForMessage(r.URL.Path) + " through this relay."}).write(w)
		return
	}
	conf := rl.webSocket()
	if !client.state.openSession(conf.MaxSessionsPerClient) {
		(&apiError{Status: http.StatusTooManyRequests, Type: "requests", Code: "too_many_sessions", RetryAfter: time.Second,
			Message: "This client has as many WebSocket sessions open as it may."}).write(w)
		return
	}
	defer client.state.sessions.Add(-1)
	up := &wsUpgrade{realtime: endpoint == "realtime", upKey: newWebSocketKey()}
	ar := &apiRequest{endpoint: endpoint}
	if up.realtime {
		ar.model = r.URL.Query().Get("model")
		repl.Set(phModel, ar.model)
		if aerr := rl.checkSessionModel(client, ar.model); aerr != nil {
			aerr.write(w)
			return
		}
		pr := rl.newProxyRequest(client, r, ar, repl, requestPriority(client, r.Header))
		if pr == nil {
			errModelNotFound(ar.model).write(w)
			return
		}
		pr.upgrade, pr.estimate, pr.promptEst = up, 0, 0
		pr.relayWith(w, pr.openRealtime)
		return
	}
	rl.openResponsesSocket(w, r, client, repl, up)
}

// checkSessionModel refuses a Realtime session without a model, or with
// one the client may not use (or, with a budget, one without a price), as
// the API refuses one it does not serve.
func (rl *Relay) checkSessionModel(client *Client, model string) *apiError {
	if model == "" {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "missing_required_parameter",
			Param: "model", Message: "Missing required parameter: 'model'."}
	}
	if !client.allowsModel(model) {
		return errModelNotAllowed(model)
	}
	if _, priced := rl.price(model, usage{}); client.Budget != nil && !priced {
		return errUnpricedModel(model)
	}
	return nil
}

// webSocket is the relay's WebSocket bounds, defaulted.
func (rl *Relay) webSocket() *WebSocketConfig {
	if rl.WebSocket != nil {
		return rl.WebSocket
	}
	return defaultWebSocket
}

var defaultWebSocket = func() *WebSocketConfig {
	c := new(WebSocketConfig)
	_ = c.provision()
	return c
}()

func newWebSocketKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// upgradeRequest is the upstream's upgrade request for a session on key:
// the client's header less its credentials, hop-by-hop fields and the
// handshake of its own leg; the key's credentials, the relay's handshake,
// the subprotocols without the client's key, and the query with the model
// as the upstream names it.
func (pr *proxyRequest) upgradeRequest(ctx context.Context, key *poolKey) (*http.Request, error) {
	u := key.upstream
	target := *u.base
	target.Path = u.base.Path + "/" + pr.api.endpoint
	q := pr.req.URL.Query()
	if pr.upgrade.realtime {
		q.Set("model", u.upstreamModel(pr.api.model))
	}
	target.RawQuery = joinQuery(u.base.RawQuery, q.Encode())
	out, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), http.NoBody)
	if err != nil {
		return nil, err
	}
	out.Header = outboundHeader(pr.req.Header)
	for _, h := range [...]string{"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
		"Sec-Websocket-Protocol", "Origin"} {
		delete(out.Header, h)
	}
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", "websocket")
	out.Header.Set("Sec-WebSocket-Version", "13")
	out.Header.Set("Sec-WebSocket-Key", pr.upgrade.upKey)
	if subs := upstreamSubprotocols(pr.req.Header); len(subs) > 0 {
		out.Header.Set("Sec-WebSocket-Protocol", strings.Join(subs, ", "))
	}
	out.Host = u.base.Host
	setKeyAuth(out.Header, key)
	if u.HeaderUp != nil {
		u.HeaderUp.ApplyTo(out.Header, pr.repl)
	}
	return out, nil
}

// upstreamSocket checks the upstream's 101 and returns its connection.
func (pr *proxyRequest) upstreamSocket(resp *http.Response) (io.ReadWriteCloser, bool) {
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || !httpguts.HeaderValuesContainsToken(resp.Header["Upgrade"], "websocket") ||
		resp.Header.Get("Sec-Websocket-Accept") != wsframe.AcceptKey(pr.upgrade.upKey) ||
		resp.Header.Get("Sec-Websocket-Extensions") != "" {
		resp.Body.Close()
		return nil, false
	}
	return rwc, true
}

// openRealtime is the delivery of a Realtime upgrade's attempt: a 101 opens
// the session and runs it to its end; any other answer is the client's.
func (pr *proxyRequest) openRealtime(w http.ResponseWriter, resp *http.Response, h *hold, success bool) {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		pr.deliver(w, resp, h, success)
		return
	}
	rwc, ok := pr.upstreamSocket(resp)
	if !ok {
		h.settle(0)
		errUpstream(http.StatusBadGateway, "The upstream's WebSocket handshake was not valid.").write(w)
		return
	}
	header := w.Header()
	copyResponseHeader(header, resp.Header)
	// The handshake fields are each leg's own.
	for _, h := range [...]string{"Sec-Websocket-Accept", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
		delete(header, h)
	}
	if p := resp.Header.Get("Sec-Websocket-Protocol"); p != "" && offered(pr.req.Header, p) {
		header.Set("Sec-WebSocket-Protocol", p)
	}
	conn, brw, ok := pr.acceptClient(w, header)
	if !ok {
		h.settle(0)
		rwc.Close()
		return
	}
	s := pr.rl.newSession(pr, conn, brw)
	s.keep(h)
	s.attach(rwc)
	s.run()
}

// offered reports whether the client offered subprotocol p.
func offered(h http.Header, p string) bool {
	for _, q := range subprotocols(h) {
		if q == p {
			return true
		}
	}
	return false
}

// acceptClient answers the client's upgrade with 101 and header, and takes
// its connection from the HTTP server.
func (pr *proxyRequest) acceptClient(w http.ResponseWriter, header http.Header) (net.Conn, *bufio.ReadWriter, bool) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		pr.rl.logger.Warn("cannot take over the client's connection for a WebSocket", zap.Error(err))
		errUpstream(http.StatusInternalServerError, "The relay could not take over the connection.").write(w)
		return nil, nil, false
	}
	// The server's read and write deadlines were for one request.
	_ = conn.SetDeadline(time.Time{})
	resp := &http.Response{
		StatusCode: http.StatusSwitchingProtocols, ProtoMajor: 1, ProtoMinor: 1,
		Header: header.Clone(),
	}
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	resp.Header.Del("Content-Length")
	resp.Header.Del("Content-Type")
	resp.Header.Set("Upgrade", "websocket")
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Sec-WebSocket-Accept", wsframe.AcceptKey(pr.req.Header.Get("Sec-Websocket-Key")))
	if err := resp.Write(brw.Writer); err != nil || brw.Writer.Flush() != nil {
		conn.Close()
		return nil, nil, false
	}
	return conn, brw, true
}
