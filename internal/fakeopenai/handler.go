package fakeopenai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const maxBody = 64 << 20

type endpoint int

const (
	epNone endpoint = iota
	epChat
	epCompletions
	epResponses
	epEmbeddings
	epModerations
	epAudio
	epModels
	epModel
	epFileCreate
	epFileList
	epFileGet
	epFileDelete
	epFileContent
	epResponseGet
	epResponseDelete
	epResponseInputItems
	epRealtime    // GET /v1/realtime upgraded to a WebSocket (realtime.go)
	epResponsesWS // GET /v1/responses upgraded to a WebSocket (realtime.go)
)

// isModelEP: the endpoint runs a model (has a model parameter, is charged
// tokens).
func isModelEP(ep endpoint) bool { return ep >= epChat && ep <= epAudio }

// route maps a request to its endpoint and the object id in its path. known
// reports whether the path exists for some method (405 rather than 404).
func route(method, path string) (ep endpoint, id string, known bool) {
	p, ok := strings.CutPrefix(path, "/v1")
	if !ok {
		return epNone, "", false
	}
	one := func(m string, e endpoint) (endpoint, string, bool) {
		if method == m {
			return e, id, true
		}
		return epNone, "", true
	}
	switch p {
	case "/chat/completions":
		return one(http.MethodPost, epChat)
	case "/completions":
		return one(http.MethodPost, epCompletions)
	case "/responses":
		if method == http.MethodGet {
			return epResponsesWS, "", true
		}
		return one(http.MethodPost, epResponses)
	case "/realtime":
		return one(http.MethodGet, epRealtime)
	case "/embeddings":
		return one(http.MethodPost, epEmbeddings)
	case "/moderations":
		return one(http.MethodPost, epModerations)
	case "/audio/transcriptions", "/audio/translations":
		return one(http.MethodPost, epAudio)
	case "/models":
		return one(http.MethodGet, epModels)
	case "/files":
		switch method {
		case http.MethodGet:
			return epFileList, "", true
		case http.MethodPost:
			return epFileCreate, "", true
		}
		return epNone, "", true
	}
	if rest, ok := strings.CutPrefix(p, "/models/"); ok && rest != "" {
		id = rest
		return one(http.MethodGet, epModel)
	}
	for _, o := range storedRoutes {
		oid, sub, ok := objectPath(p, o.prefix, o.sub)
		switch {
		case !ok:
			continue
		case sub:
			id = oid
			return one(http.MethodGet, o.subEp)
		}
		id = oid
		switch method {
		case http.MethodGet:
			return o.get, id, true
		case http.MethodDelete:
			return o.del, id, true
		}
		return epNone, "", true
	}
	return epNone, "", false
}

// storedRoutes are the endpoints of stored objects: GET and DELETE of
// /<prefix>{id}, and GET of /<prefix>{id}<sub>.
var storedRoutes = []struct {
	prefix, sub     string
	get, del, subEp endpoint
}{
	{"/files/", "/content", epFileGet, epFileDelete, epFileContent},
	{"/responses/", "/input_items", epResponseGet, epResponseDelete, epResponseInputItems},
}

// objectPath reads /<prefix>{id} (sub false) or /<prefix>{id}<suffix> (sub
// true) from p; ok is false for any other path.
func objectPath(p, prefix, suffix string) (id string, sub, ok bool) {
	rest, found := strings.CutPrefix(p, prefix)
	if !found || rest == "" {
		return "", false, false
	}
	if oid, isSub := strings.CutSuffix(rest, suffix); isSub && oid != "" && !strings.Contains(oid, "/") {
		return oid, true, true
	}
	if strings.Contains(rest, "/") {
		return "", false, false
	}
	return rest, false, true
}

// call is the state of one request.
type call struct {
	recorded bool // finish has run (a reset records before it closes the connection)
	s        *Server
	w        http.ResponseWriter
	r        *http.Request
	start    time.Time
	reqID    string
	secret   string
	key      *keyEntry
	access   *keyAccess
	project  string // sent as openai-project once the key is authenticated
	status   int
	rl       *rlSnapshot
	model    string
	stream   bool
	body     []byte
	ws       *wsConn // set for the calls of a WebSocket session: errors are error events, streams are socket messages
	event    string  // the client event of a WebSocket session this call answers (Record.Event)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{s: s, w: w, r: r, start: s.now(), reqID: newID("req_", 32)}
	defer s.finish(c)

	if r.Body == nil { // a client-side *http.Request passed to the handler
		r.Body = http.NoBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	c.body = body
	ep, objID, known := route(r.Method, r.URL.Path)

	// Parse what the fault matching and the records need.
	var req apiRequest
	var parseErr error
	var audio audioForm
	var upload uploadForm
	if err != nil {
		parseErr = err
	} else {
		switch ep {
		case epChat, epCompletions, epResponses, epEmbeddings, epModerations:
			parseErr = json.Unmarshal(body, &req)
			if req.Model != nil {
				c.model = *req.Model
			}
			c.stream = req.Stream
		case epAudio:
			audio, parseErr = parseAudio(r.Header.Get("Content-Type"), body)
			c.model = audio.model
		case epFileCreate:
			upload, parseErr = parseUpload(r.Header.Get("Content-Type"), body)
		case epRealtime:
			c.model, c.stream = r.URL.Query().Get("model"), true
		case epResponsesWS:
			c.stream = true
		}
	}

	c.secret = s.credential(r)
	if c.key = s.key(c.secret); c.key != nil {
		c.key.count.Add(1)
	}

	dropAfter := 0
	if f := s.takeFault(c.secret, r.URL.Path, c.stream); f != nil {
		if f.Latency > 0 && !sleep(r, f.Latency) {
			c.status = 499
			return
		}
		if f.Reset {
			// Recorded before the connection goes: a client that sees the
			// reset and asks for the records must find this request there.
			s.finish(c)
			c.recorded = true
			resetConn(w)
			return
		}
		if f.Status != 0 {
			c.fault(f)
			return
		}
		dropAfter = f.DropAfter
	}

	// Authentication and the key's account.
	if c.secret == "" {
		c.fail(http.StatusUnauthorized, msgNoKey, "invalid_request_error", nil, nil)
		return
	}
	if c.key == nil {
		c.fail(http.StatusUnauthorized, invalidKeyMessage(c.secret), "invalid_request_error", nil, strp("invalid_api_key"))
		return
	}
	switch KeyState(c.key.state.Load()) {
	case KeyInvalid:
		c.fail(http.StatusUnauthorized, invalidKeyMessage(c.secret), "invalid_request_error", nil, strp("invalid_api_key"))
		return
	case KeyDeactivated:
		c.fail(http.StatusUnauthorized, msgDeactivated, "invalid_request_error", nil, strp("account_deactivated"))
		return
	case KeyNoQuota:
		c.fail(http.StatusTooManyRequests, msgNoQuota, "insufficient_quota", nil, strp("insufficient_quota"))
		return
	case KeyForbidden:
		c.fail(http.StatusForbidden, msgForbidden, "request_forbidden", nil, strp("unsupported_country_region_territory"))
		return
	}
	c.access = c.key.access.Load()
	c.project = c.access.project

	// Routing.
	if (ep == epRealtime || ep == epResponsesWS) && !isWebSocketUpgrade(r) {
		if ep == epRealtime {
			c.fail(http.StatusBadRequest, msgNeedUpgrade, "invalid_request_error", nil, nil)
			return
		}
		ep = epNone // GET /v1/responses without an upgrade: 405 as before
	}
	if ep == epNone {
		if known {
			c.fail(http.StatusMethodNotAllowed, "Invalid method for URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", nil, nil)
		} else {
			c.fail(http.StatusNotFound, "Invalid URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", nil, nil)
		}
		return
	}

	// Restricted keys.
	if missing := c.access.missing(requiredScopes(ep)); len(missing) > 0 {
		c.fail(http.StatusUnauthorized, msgMissingScopesPrefix+strings.Join(missing, ", ")+msgMissingScopesSuffix, "invalid_request_error", nil, nil)
		return
	}

	if ep == epRealtime || ep == epResponsesWS {
		c.serveWebSocket(ep, dropAfter)
		return
	}

	if ep == epModels || ep == epModel {
		if s.rlHeaders {
			snap := c.key.snapshot(s.now())
			c.rl = &snap
		}
		c.models(ep, objID)
		return
	}

	if !isModelEP(ep) {
		if ep == epFileCreate && !c.validateUpload(upload, parseErr) {
			return
		}
		var lp listParams
		ok := true
		switch ep {
		case epFileList:
			if lp, ok = c.parseList(10000, 10000); !ok {
				return
			}
		case epResponseInputItems:
			if lp, ok = c.parseList(100, 20); !ok {
				return
			}
		}
		if !c.admit(0) {
			return
		}
		switch ep {
		case epFileCreate:
			c.fileCreate(upload)
		case epFileList:
			c.fileList(lp)
		case epFileGet:
			c.fileGet(objID)
		case epFileDelete:
			c.fileDelete(objID)
		case epFileContent:
			c.fileContent(objID)
		case epResponseGet:
			c.responseGet(objID)
		case epResponseDelete:
			c.responseDelete(objID)
		case epResponseInputItems:
			c.responseInputItems(objID, lp)
		}
		return
	}

	c.serveModel(ep, &req, parseErr, audio, dropAfter)
}

// serveModel answers a request to an endpoint that runs a model, from its
// validation on: by HTTP, or (c.ws set) for a response.create of a Responses
// WebSocket session.
func (c *call) serveModel(ep endpoint, req *apiRequest, parseErr error, audio audioForm, dropAfter int) {
	s := c.s
	// Validation.
	if parseErr != nil {
		c.failParse(parseErr, ep == epAudio)
		return
	}
	if ep == epAudio && !audio.hasFile {
		c.fail(http.StatusBadRequest, "Missing required parameter: 'file'.", "invalid_request_error", strp("file"), strp("missing_required_parameter"))
		return
	}
	if c.model == "" && ep == epModerations {
		c.model = "omni-moderation-latest"
	}
	if c.model == "" {
		c.fail(http.StatusBadRequest, msgNoModel, "invalid_request_error", nil, nil)
		return
	}
	if _, ok := s.models[c.model]; !ok {
		c.fail(http.StatusNotFound, "The model `"+c.model+"` does not exist or you do not have access to it.", "invalid_request_error", nil, strp("model_not_found"))
		return
	}
	if !c.access.allowsModel(c.model) {
		c.fail(http.StatusForbidden, projectModelMessage(c.project, c.model), "invalid_request_error", nil, strp("model_not_found"))
		return
	}
	if _, gated := s.verifyOrg[c.model]; gated && !c.access.verified {
		c.fail(http.StatusForbidden, verifyOrgMessage(c.model), "invalid_request_error", nil, nil)
		return
	}

	// Content and cost.
	var tc textCounter
	tc.keep = (ep == epChat || ep == epResponses) && !s.opts.NoPromptCache
	var last string
	var prompts []string
	var prev *storedResponse
	switch ep {
	case epChat:
		if req.Messages == nil {
			c.fail(http.StatusBadRequest, "Missing required parameter: 'messages'.", "invalid_request_error", strp("messages"), strp("missing_required_parameter"))
			return
		}
		if len(req.Messages) == 0 {
			c.fail(http.StatusBadRequest, "[] is too short - 'messages'", "invalid_request_error", strp("messages"), strp("empty_array"))
			return
		}
		last = chatText(req.Messages, &tc)
	case epCompletions:
		prompts = promptList(req.Prompt, &tc)
		if len(prompts) > 0 {
			last = prompts[0]
		}
	case epResponses:
		if req.PreviousResponseID != nil && *req.PreviousResponseID != "" {
			if prev = c.previousResponse(*req.PreviousResponseID); prev == nil {
				c.fail(http.StatusBadRequest, previousResponseMessage(*req.PreviousResponseID), "invalid_request_error", strp("previous_response_id"), strp("previous_response_not_found"))
				return
			}
		}
		last = responsesText(req, &tc)
	case epEmbeddings, epModerations:
		if len(req.Input) == 0 || string(req.Input) == "null" {
			c.fail(http.StatusBadRequest, "Missing required parameter: 'input'.", "invalid_request_error", strp("input"), strp("missing_required_parameter"))
			return
		}
		prompts = promptList(req.Input, &tc)
	}
	prompt := tc.promptTokens()
	if prev != nil {
		// The API bills a continued response for the whole conversation:
		// the previous response's input and output come in again as input.
		prompt += prev.resp.Usage.InputTokens + prev.resp.Usage.OutputTokens
	}
	allow := req.allowance()
	cost := prompt + allow
	if ep == epAudio {
		cost = 0
	}
	if !c.admit(cost) {
		return
	}
	cached := 0
	if tc.keep {
		cached = s.prompts.lookup(c.project, c.model, tc.text.String(), prompt, s.now())
	}

	var used int
	switch ep {
	case epChat:
		used = c.chat(req, last, prompt, cached, allow, dropAfter)
	case epCompletions:
		used = c.completions(req, last, prompt, allow, dropAfter)
	case epResponses:
		used = c.responses(req, last, prompt, cached, allow, dropAfter, prev)
	case epEmbeddings:
		used = c.embeddings(req, prompts, prompt)
	case epModerations:
		used = c.moderations(prompts)
	case epAudio:
		c.audio(audio)
	}
	if s.opts.RefundUnusedTokens && used >= 0 && c.status/100 == 2 {
		c.key.refund(s.now(), cost-used)
	}
}

// admit charges the key one request and cost tokens, answering the 429
// itself when refused.
func (c *call) admit(cost int) bool { return c.admitN(1, cost) }

// admitN charges the key reqs requests (0 or 1) and cost tokens.
func (c *call) admitN(reqs, cost int) bool {
	snap, denial := c.key.admitN(c.s.now(), reqs, cost)
	if c.s.rlHeaders {
		c.rl = &snap
	}
	if denial == nil {
		return true
	}
	c.s.rateLimited.Add(1)
	if !denial.tooLarge && c.ws == nil {
		h := c.w.Header()
		h[hRetry] = []string{strconv.FormatInt(ceilSeconds(denial.wait), 10)}
		h[hRetryMs] = []string{strconv.FormatInt(ceilMillis(denial.wait), 10)}
	}
	c.fail(http.StatusTooManyRequests, rateLimitMessage(c.model, denial), denial.kind, nil, strp("rate_limit_exceeded"))
	return false
}

// failParse answers a body that could not be read or parsed.
func (c *call) failParse(parseErr error, multipartBody bool) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(parseErr, &mbe):
		c.fail(http.StatusRequestEntityTooLarge, msgTooBig, "invalid_request_error", nil, nil)
	case multipartBody:
		c.fail(http.StatusBadRequest, parseErr.Error(), "invalid_request_error", nil, nil)
	default:
		var te *json.UnmarshalTypeError
		if errors.As(parseErr, &te) && te.Field != "" {
			c.fail(http.StatusBadRequest, "Invalid type for '"+te.Field+"': expected "+te.Type.String()+", but got "+te.Value+" instead.", "invalid_request_error", strp(te.Field), strp("invalid_type"))
		} else {
			c.fail(http.StatusBadRequest, msgBadJSON, "invalid_request_error", nil, nil)
		}
	}
}

// credential extracts the presented key.
func (s *Server) credential(r *http.Request) string {
	if !s.opts.RequireAPIKeyHeader {
		if a := r.Header.Get("Authorization"); a != "" {
			if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
				return strings.TrimSpace(a[7:])
			}
		}
		if k := subprotocolKey(r); k != "" {
			return k
		}
	}
	return strings.TrimSpace(r.Header.Get("Api-Key"))
}

func (s *Server) finish(c *call) {
	if c.recorded {
		return
	}
	if c.key != nil && (c.status/100 == 2 || c.status == http.StatusSwitchingProtocols) {
		c.key.served.Add(1)
	}
	if !s.recording.Load() {
		return
	}
	rec := Record{
		Time:   c.start,
		Method: c.r.Method,
		Path:   c.r.URL.Path,
		Query:  c.r.URL.RawQuery,
		Model:  c.model,
		Stream: c.stream,
		Header: c.r.Header.Clone(),
		Body:   c.body,
		Status: c.status,
		Event:  c.event,
	}
	if c.key != nil {
		rec.Key = c.secret
	}
	s.recMu.Lock()
	s.records = append(s.records, rec)
	s.recMu.Unlock()
}

// writeHeader sets the common headers and writes the status line.
func (c *call) writeHeader(status int, ct []string) {
	h := c.w.Header()
	h[hCT] = ct
	c.commonHeaders()
	c.status = status
	c.w.WriteHeader(status)
}

// commonHeaders sets the headers of every answer but Content-Type.
func (c *call) commonHeaders() {
	h := c.w.Header()
	h[hReqID] = []string{c.reqID}
	h[hOrg] = orgFake
	h[hVersion] = version
	h[hProcMs] = []string{strconv.FormatInt(c.s.now().Sub(c.start).Milliseconds(), 10)}
	if c.project != "" {
		h[hProject] = []string{c.project}
	}
	if c.rl != nil {
		setRateHeaders(h, *c.rl, c.s.opts.BucketRemaining)
	}
}

func (c *call) writeJSON(status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.fail(http.StatusInternalServerError, err.Error(), "server_error", nil, nil)
		return
	}
	c.writeBody(status, ctJSON, b)
}

func (c *call) fail(status int, msg, typ string, param, code *string) {
	if c.ws != nil {
		c.status = status
		c.recordEvent()
		c.ws.sendError(status, msg, typ, param, code)
		return
	}
	c.writeBody(status, ctJSON, errorJSON(msg, typ, param, code))
}

func (c *call) fault(f *Fault) {
	for k, v := range f.Header {
		c.w.Header()[http.CanonicalHeaderKey(k)] = v
	}
	if f.Body != "" {
		c.writeBody(f.Status, ctJSON, []byte(f.Body))
		return
	}
	msg, typ := serverErrorMessage(f.Status)
	var code *string
	if f.Status == http.StatusTooManyRequests {
		code = strp("rate_limit_exceeded")
		if c.w.Header().Get(hRetry) == "" {
			c.w.Header()[hRetry] = []string{"1"}
		}
		if c.w.Header().Get(hRetryMs) == "" {
			c.w.Header()[hRetryMs] = []string{"1000"}
		}
	}
	c.fail(f.Status, msg, typ, nil, code)
}

// sleep waits d or until the client goes away (false).
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// resetConn closes the connection without answering.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

type audioForm struct {
	model   string
	size    int
	hasFile bool
	format  string
}

// clientMessage is an error whose text is OpenAI's message to the client,
// capitalised as OpenAI writes it.
type clientMessage string

func (m clientMessage) Error() string { return string(m) }

// errForm is the API's answer to a multipart body it cannot read.
const errForm = clientMessage("Could not parse multipart form")

// eachFormPart calls fn with every part of a multipart/form-data body, as
// the API reads forms; a body of another type is the API's error.
func eachFormPart(ct string, body []byte, fn func(p *multipart.Part) error) error {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return clientMessage("Invalid Content-Type header (" + ct + "), expected multipart/form-data. (HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errForm
		}
		err = fn(p)
		p.Close()
		if err != nil {
			return err
		}
	}
}

// formValue reads a small form field.
func formValue(p *multipart.Part) (string, error) {
	v, err := io.ReadAll(io.LimitReader(p, 1024))
	if err != nil {
		return "", errForm
	}
	return string(v), nil
}

func parseAudio(ct string, body []byte) (audioForm, error) {
	var f audioForm
	err := eachFormPart(ct, body, func(p *multipart.Part) error {
		var err error
		switch p.FormName() {
		case "file":
			var n int64
			if n, err = io.Copy(io.Discard, p); err != nil {
				return errForm
			}
			f.size, f.hasFile = int(n), true
		case "model":
			f.model, err = formValue(p)
		case "response_format":
			f.format, err = formValue(p)
		}
		return err
	})
	return f, err
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
const hexdigits = "0123456789abcdef"

// newID returns prefix + n random characters (hex when prefix is "req_",
// alphanumeric otherwise).
func newID(prefix string, n int) string {
	chars := alnum
	if prefix == "req_" {
		chars = hexdigits
	}
	b := make([]byte, len(prefix)+n)
	copy(b, prefix)
	var x uint64
	for i := len(prefix); i < len(b); i++ {
		if x < uint64(len(chars)) {
			x = rand.Uint64()
		}
		b[i] = chars[x%uint64(len(chars))]
		x /= uint64(len(chars))
	}
	return string(b)
}
