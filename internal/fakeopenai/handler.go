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
)

func route(path string) (endpoint, string) {
	p, ok := strings.CutPrefix(path, "/v1")
	if !ok {
		return epNone, ""
	}
	switch p {
	case "/chat/completions":
		return epChat, http.MethodPost
	case "/completions":
		return epCompletions, http.MethodPost
	case "/responses":
		return epResponses, http.MethodPost
	case "/embeddings":
		return epEmbeddings, http.MethodPost
	case "/moderations":
		return epModerations, http.MethodPost
	case "/audio/transcriptions", "/audio/translations":
		return epAudio, http.MethodPost
	case "/models":
		return epModels, http.MethodGet
	}
	if id, ok := strings.CutPrefix(p, "/models/"); ok && id != "" {
		return epModel, http.MethodGet
	}
	return epNone, ""
}

// call is the state of one request.
type call struct {
	s      *Server
	w      http.ResponseWriter
	r      *http.Request
	start  time.Time
	reqID  string
	secret string
	key    *keyEntry
	status int
	rl     *rlSnapshot
	model  string
	stream bool
	body   []byte
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{s: s, w: w, r: r, start: s.now(), reqID: newID("req_", 32)}
	defer s.finish(c)

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	c.body = body
	ep, method := route(r.URL.Path)

	// Parse what the fault matching and the records need.
	var req apiRequest
	var parseErr error
	var audio audioForm
	if err != nil {
		parseErr = err
	} else if r.Method == http.MethodPost {
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
			resetConn(w)
			return
		}
		if f.Status != 0 {
			c.fault(f)
			return
		}
		dropAfter = f.DropAfter
	}

	// Authentication.
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
	case KeyNoQuota:
		c.fail(http.StatusTooManyRequests, msgNoQuota, "insufficient_quota", nil, strp("insufficient_quota"))
		return
	case KeyForbidden:
		c.fail(http.StatusForbidden, msgForbidden, "request_forbidden", nil, strp("unsupported_country_region_territory"))
		return
	}

	// Routing.
	if ep == epNone {
		c.fail(http.StatusNotFound, "Invalid URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", nil, nil)
		return
	}
	if r.Method != method {
		c.fail(http.StatusMethodNotAllowed, "Invalid method for URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", nil, nil)
		return
	}
	if ep == epModels || ep == epModel {
		if s.rlHeaders {
			snap := c.key.snapshot(s.now())
			c.rl = &snap
		}
		c.models(ep)
		return
	}

	// Validation.
	if parseErr != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(parseErr, &mbe):
			c.fail(http.StatusRequestEntityTooLarge, msgTooBig, "invalid_request_error", nil, nil)
		case ep == epAudio:
			c.fail(http.StatusBadRequest, parseErr.Error(), "invalid_request_error", nil, nil)
		default:
			var te *json.UnmarshalTypeError
			if errors.As(parseErr, &te) && te.Field != "" {
				c.fail(http.StatusBadRequest, "Invalid type for '"+te.Field+"': expected "+te.Type.String()+", but got "+te.Value+" instead.", "invalid_request_error", strp(te.Field), strp("invalid_type"))
			} else {
				c.fail(http.StatusBadRequest, msgBadJSON, "invalid_request_error", nil, nil)
			}
		}
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

	// Content and cost.
	var tc textCounter
	var last string
	var prompts []string
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
		last = responsesText(&req, &tc)
	case epEmbeddings, epModerations:
		if len(req.Input) == 0 || string(req.Input) == "null" {
			c.fail(http.StatusBadRequest, "Missing required parameter: 'input'.", "invalid_request_error", strp("input"), strp("missing_required_parameter"))
			return
		}
		prompts = promptList(req.Input, &tc)
	}
	prompt := tc.promptTokens()
	allow := req.allowance()
	cost := prompt + allow
	if ep == epAudio {
		cost = 0
	}

	snap, denial := c.key.admit(s.now(), cost)
	if s.rlHeaders {
		c.rl = &snap
	}
	if denial != nil {
		s.rateLimited.Add(1)
		if !denial.tooLarge {
			h := w.Header()
			h[hRetry] = []string{strconv.FormatInt(ceilSeconds(denial.wait), 10)}
			h[hRetryMs] = []string{strconv.FormatInt(ceilMillis(denial.wait), 10)}
		}
		c.fail(http.StatusTooManyRequests, rateLimitMessage(c.model, denial), denial.kind, nil, strp("rate_limit_exceeded"))
		return
	}

	var used int
	switch ep {
	case epChat:
		used = c.chat(&req, last, prompt, allow, dropAfter)
	case epCompletions:
		used = c.completions(&req, last, prompt, allow, dropAfter)
	case epResponses:
		used = c.responses(&req, last, prompt, allow, dropAfter)
	case epEmbeddings:
		used = c.embeddings(&req, prompts, prompt)
	case epModerations:
		used = c.moderations(prompts)
	case epAudio:
		c.audio(audio)
	}
	if s.opts.RefundUnusedTokens && used >= 0 && c.status/100 == 2 {
		c.key.refund(s.now(), cost-used)
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
	}
	return strings.TrimSpace(r.Header.Get("Api-Key"))
}

func (s *Server) finish(c *call) {
	if c.key != nil && c.status/100 == 2 {
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
	h[hReqID] = []string{c.reqID}
	h[hOrg] = orgFake
	h[hVersion] = version
	h[hProcMs] = []string{strconv.FormatInt(c.s.now().Sub(c.start).Milliseconds(), 10)}
	if c.rl != nil {
		setRateHeaders(h, *c.rl)
	}
	c.status = status
	c.w.WriteHeader(status)
}

func (c *call) writeJSON(status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.fail(http.StatusInternalServerError, err.Error(), "server_error", nil, nil)
		return
	}
	c.writeHeader(status, ctJSON)
	_, _ = c.w.Write(b)
}

func (c *call) fail(status int, msg, typ string, param, code *string) {
	c.writeHeader(status, ctJSON)
	_, _ = c.w.Write(errorJSON(msg, typ, param, code))
}

func (c *call) fault(f *Fault) {
	for k, v := range f.Header {
		c.w.Header()[http.CanonicalHeaderKey(k)] = v
	}
	if f.Body != "" {
		c.writeHeader(f.Status, ctJSON)
		_, _ = io.WriteString(c.w, f.Body)
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

func parseAudio(ct string, body []byte) (audioForm, error) {
	var f audioForm
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return f, clientMessage("Invalid Content-Type header (" + ct + "), expected multipart/form-data. (HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return f, clientMessage("Could not parse multipart form")
		}
		switch p.FormName() {
		case "file":
			n, err := io.Copy(io.Discard, p)
			if err != nil {
				return f, clientMessage("Could not parse multipart form")
			}
			f.size, f.hasFile = int(n), true
		case "model", "response_format":
			v, err := io.ReadAll(io.LimitReader(p, 1024))
			if err != nil {
				return f, clientMessage("Could not parse multipart form")
			}
			if p.FormName() == "model" {
				f.model = string(v)
			} else {
				f.format = string(v)
			}
		}
		p.Close()
	}
	return f, nil
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
