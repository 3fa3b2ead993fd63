package openairelay

import (
	"net/http"
	"time"

	"github.com/caddyrelay/openairelay/internal/wsframe"
	"github.com/caddyserver/caddy/v2"
)

// The Responses API's WebSocket mode: the client's upgrade is answered at
// once, each response.create is read as the POST /v1/responses it stands
// for, and the first one routes the socket to a key and dials it.

// responsesMessage handles a Responses socket's client message: each
// response.create is a POST /v1/responses, parsed, checked and reserved as
// one; the first opens the upstream.
func (s *wsSession) responsesMessage(msg wsframe.Message, head eventHead, ok bool) bool {
	if !ok || head.typ != "response.create" {
		if s.upstream() != nil {
			return s.forward(msg)
		}
		if !ok {
			return s.refuse(errBadRequest("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", ""), "")
		}
		return s.refuse(&apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_value", Param: "type",
			Message: "Invalid value: '" + truncateForMessage(head.typ) + "'. Supported values are: 'response.create'."}, "")
	}
	lane := head.streamID
	req, aerr := s.responseRequest(msg.Data)
	if aerr != nil {
		return s.refuse(aerr, lane)
	}
	var dialled *hold
	if s.upstream() == nil {
		h, ev := s.dialResponses(req, lane)
		if ev != nil {
			return s.toClient(wsframe.OpText, ev) == nil
		}
		dialled = h
	} else if !s.servesHere(req.api.model) {
		return s.refuse(errModelNotFound(req.api.model), lane)
	}
	body, err := req.api.bodyFor(s.key.upstream.upstreamModel(req.api.model), false)
	if err != nil {
		dialled.cancel()
		return s.refuse(errBadRequest("The request could not be prepared for the upstream: "+err.Error(), ""), lane)
	}
	r, aerr, code := s.planResponse(req, lane, req.estimate, req.api.maxOut, dialled)
	if aerr != nil {
		s.fail(aerr, lane, code)
		return false
	}
	s.mu.Lock()
	s.pending = append(s.pending, r)
	s.mu.Unlock()
	return s.forward(wsframe.Message{Op: wsframe.OpText, Data: body})
}

// responseRequest reads a response.create as the POST /v1/responses it
// stands for: its model must be the client's to use and served, and the
// objects it names the client's (or this socket's own responses).
func (s *wsSession) responseRequest(body []byte) (*proxyRequest, *apiError) {
	ar := &apiRequest{endpoint: "responses", body: body, kind: bodyJSON}
	if aerr := ar.parseJSON(); aerr != nil {
		return nil, aerr
	}
	if aerr := ar.requireModel(http.MethodPost); aerr != nil {
		return nil, aerr
	}
	if !s.pr.client.allowsModel(ar.model) {
		return nil, errModelNotAllowed(ar.model)
	}
	post := s.pr.req.Clone(s.pr.req.Context())
	post.Method = http.MethodPost
	req := s.rl.newProxyRequest(s.pr.client, post, ar, s.pr.repl, s.pr.priority)
	if req == nil {
		return nil, errModelNotFound(ar.model)
	}
	s.mu.Lock()
	req.ownIDs = s.own
	s.mu.Unlock()
	if aerr := req.checkObjects(); aerr != nil {
		return nil, aerr
	}
	if req.pinned != nil && req.pinned != noPin && s.key != nil && req.pinned != s.key {
		return nil, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "previous_response_not_found",
			Param: "previous_response_id", Message: "This socket's upstream key cannot continue a response another key made: open a new socket for it."}
	}
	return req, nil
}

// servesHere reports whether the session's key may serve model for its
// client.
func (s *wsSession) servesHere(model string) bool {
	return s.pr.client.allowsUpstream(s.key.upstream.index) && s.key.upstream.serves(model)
}

// openResponsesSocket answers a Responses WebSocket upgrade at once and
// runs its session; the upstream is dialled for its first response.create.
func (rl *Relay) openResponsesSocket(w http.ResponseWriter, r *http.Request, client *Client, repl *caddy.Replacer, up *wsUpgrade) {
	pr := &proxyRequest{rl: rl, client: client, req: r, api: &apiRequest{endpoint: "responses"}, repl: repl,
		priority: requestPriority(client, r.Header), upgrade: up}
	header := w.Header()
	conn, brw, ok := pr.acceptClient(w, header)
	if !ok {
		return
	}
	s := rl.newSession(pr, conn, brw)
	s.run()
}

// dialResponses opens the upstream of a Responses socket for its first
// response.create (first, parsed as the POST /v1/responses it stands for):
// a key is chosen for its model, with room for it, and dialled, with
// retries on other keys as for a request. The hold the dial took is the
// first response's (the upstream counts the response, not the socket). A
// failure is the error event the client gets in its place (on lane, the
// create's stream_id).
func (s *wsSession) dialResponses(first *proxyRequest, lane string) (*hold, []byte) {
	pr := s.pr
	pr.api.model, pr.api.maxOut = first.api.model, first.api.maxOut
	pr.route, pr.pinned = first.route, first.pinned
	pr.deadline = time.Now().Add(time.Duration(s.rl.MaxWait))
	pr.estimate, pr.promptEst = first.estimate, first.promptEst
	pr.repl.Set(phModel, first.api.model)
	var kept *hold
	bw := &bufferWriter{header: make(http.Header)}
	pr.relayWith(bw, func(w http.ResponseWriter, resp *http.Response, h *hold, success bool) {
		if resp.StatusCode != http.StatusSwitchingProtocols {
			pr.deliver(w, resp, h, success)
			return
		}
		rwc, ok := pr.upstreamSocket(resp)
		if !ok {
			h.cancel()
			errUpstream(http.StatusBadGateway, "The upstream's WebSocket handshake was not valid.").write(w)
			return
		}
		// The hold outlives this attempt: the first response's last
		// event settles it.
		kept = h.keep()
		s.key = h.key
		if !s.attach(rwc) {
			kept.cancel()
			kept = nil
		}
	})
	if kept != nil {
		return kept, nil
	}
	status := bw.status
	if status == 0 {
		status = http.StatusBadGateway
	}
	return nil, wsErrorFromAnswer(false, status, bw.body.Bytes(), lane)
}
