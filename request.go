package openairelay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyrelay/openairelay/internal/jsonscan"

	"github.com/caddyserver/caddy/v2"
)

// apiRequest is what the relay needs to know of a client request. The body is
// kept as bytes and replayed on each attempt.
type apiRequest struct {
	// endpoint is the API path after /v1, without a leading slash, such as
	// "chat/completions" or "files/file-abc/content".
	endpoint string
	body     []byte
	kind     bodyKind

	model    string
	stream   bool
	maxOut   int64 // max_tokens, max_completion_tokens or max_output_tokens; 0 if absent
	boundary string
	// fixContentType is set when a JSON body came with another content type.
	fixContentType bool

	// modelSpan is the byte range of the model's JSON value in body, so an
	// alias can be spliced in without re-encoding the body.
	modelSpan [2]int
	// streamOptions is the raw value of stream_options, if present, and
	// streamOptionsAt where it starts in body.
	streamOptions   []byte
	streamOptionsAt int
	// wantsUsage is set when the client asked for a stream's usage chunk.
	wantsUsage bool
	// previousResponse is a Responses request's previous_response_id.
	previousResponse string
	// nestedModel is set when model was read from inside the body
	// (session.model), where no alias is spliced.
	nestedModel bool

	// buf holds body, and held is what it counts against max_buffered,
	// until Relay.releaseBody.
	buf  *bytes.Buffer
	held int64
}

// parse reads and checks a client's request: its method and endpoint, its
// body (bounded by max_body_size and, with every body held, by
// max_buffered) and the model it names, which the client must be allowed.
// On a refusal it writes the answer and reports false; otherwise the body
// is held until releaseBody.
func (rl *Relay) parse(w http.ResponseWriter, r *http.Request, client *Client, repl *caddy.Replacer) (*apiRequest, bool) {
	// The API takes GET, POST and DELETE: anything else (TRACE, PUT, …)
	// is refused before it can reach an upstream that might echo it.
	if r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodDelete {
		(&apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "Invalid method for URL (" + truncateForMessage(r.Method) + " " + truncateForMessage(r.URL.Path) + ")"}).write(w)
		return nil, false
	}
	endpoint, ok := apiEndpoint(r.URL.Path)
	if !ok {
		(&apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
			Message: "Invalid URL (" + r.Method + " " + truncateForMessage(r.URL.Path) + ")"}).write(w)
		return nil, false
	}
	if !client.allowsEndpoint(endpoint) {
		(&apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "endpoint_not_allowed",
			Message: "This client may not call " + truncateForMessage(r.URL.Path) + " through this relay."}).write(w)
		return nil, false
	}

	ar := &apiRequest{endpoint: endpoint, buf: getBuffer()}
	if aerr := rl.readBody(w, r, ar.buf); aerr != nil {
		putBuffer(ar.buf)
		aerr.write(w)
		return nil, false
	}
	ar.body = ar.buf.Bytes()
	// Bodies held (in flight and queued) stay within max_buffered.
	ar.held = int64(ar.buf.Cap())
	if rl.buffered.Add(ar.held) > rl.MaxBuffered {
		rl.releaseBody(ar)
		(&apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "relay_busy", RetryAfter: time.Second,
			Message: "The relay holds as many request bodies as it may: try again shortly."}).write(w)
		return nil, false
	}
	if aerr := ar.check(r, client); aerr != nil {
		rl.releaseBody(ar)
		aerr.write(w)
		return nil, false
	}
	// The model is logged for a request refused for it, too.
	repl.Set(phModel, ar.model)
	if !client.allowsModel(ar.model) {
		rl.releaseBody(ar)
		errModelNotAllowed(ar.model).write(w)
		return nil, false
	}
	return ar, true
}

// check parses the body and finds the request's model.
func (ar *apiRequest) check(r *http.Request, client *Client) *apiError {
	if aerr := ar.parseBody(r.Method, r.Header); aerr != nil {
		return aerr
	}
	// GET /v1/models/{model} (and DELETE, for fine-tuned models) names
	// its model in the path: it is routed and allowed like a body's model,
	// and a body cannot name another.
	if id, ok := strings.CutPrefix(ar.endpoint, "models/"); ok && id != "" {
		if !utf8.ValidString(id) || (ar.model != "" && ar.model != id) || !client.allowsModel(id) {
			return errModelNotFound(id)
		}
		ar.model = id
	}
	return ar.requireModel(r.Method)
}

// releaseBody gives back the body's buffer and its share of max_buffered.
func (rl *Relay) releaseBody(ar *apiRequest) {
	if ar.buf == nil {
		return
	}
	rl.buffered.Add(-ar.held)
	putBuffer(ar.buf)
	ar.buf, ar.held = nil, 0
}

// caseSensitiveMembers are the members the relay routes, limits and
// accounts by. Some compatible servers match member names without regard to
// case (Go's encoding/json does): a "Model" the relay ignored could choose
// the model upstream past the client's allow-list, a "Stream" or
// "Stream_Options" could hide a stream's usage. Their case variants are
// refused.
var caseSensitiveMembers = [...]string{"model", "stream", "stream_options"}

// modelEndpoints are the POST endpoints that take a model, with the model
// the API uses when a request names none, where it documents one (the
// moderations endpoint: omni-moderation-latest). A request to another of
// them without a model is refused: the upstream would pick one, past the
// client's allow-list and the upstreams' models.
var modelEndpoints = map[string]string{
	"chat/completions": "", "completions": "", "embeddings": "", "responses": "",
	"moderations":        "omni-moderation-latest",
	"images/generations": "", "images/edits": "", "images/variations": "",
	"audio/speech": "", "audio/transcriptions": "", "audio/translations": "",
	"fine_tuning/jobs": "", "assistants": "", "realtime/sessions": "", "realtime/client_secrets": "",
}

// requireModel applies modelEndpoints to a POST request.
func (ar *apiRequest) requireModel(method string) *apiError {
	if method != http.MethodPost || ar.model != "" {
		return nil
	}
	def, ok := modelEndpoints[ar.endpoint]
	switch {
	case !ok:
		return nil
	case def != "":
		ar.model = def
		return nil
	}
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "missing_required_parameter",
		Param: "model", Message: "you must provide a model parameter"}
}

type bodyKind uint8

const (
	bodyNone bodyKind = iota
	bodyJSON
	bodyMultipart
	bodyOther
)

// jsonEndpoints take only JSON bodies: a body of another type sent to them is
// a client error, found before anything is sent upstream.
var jsonEndpoints = map[string]bool{
	"chat/completions":   true,
	"completions":        true,
	"embeddings":         true,
	"responses":          true,
	"moderations":        true,
	"images/generations": true,
	"audio/speech":       true,
	"batches":            true,
}

// apiEndpoint maps the client's path to the API path below the upstream's
// base URL. A leading /v1 is the version segment every OpenAI client adds and
// is removed (the upstream URL carries its own); other paths are taken as
// they are, for a relay mounted below a prefix with handle_path. Dot segments
// are refused outright rather than cleaned: a client never needs them, and
// cleaning could move a request to an endpoint it did not name.
func apiEndpoint(p string) (string, bool) {
	switch {
	case p == "/v1" || p == "/v1/":
		p = ""
	case strings.HasPrefix(p, "/v1/"):
		p = p[len("/v1/"):]
	default:
		p = strings.TrimPrefix(p, "/")
	}
	if p == "" {
		return "", false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
			return "", false
		}
	}
	return p, true
}

// parseBody checks the body and extracts the fields the relay routes and
// accounts by. It returns a client error for a body the API would refuse.
func (ar *apiRequest) parseBody(method string, h http.Header) *apiError {
	ar.modelSpan = [2]int{-1, -1}
	if len(ar.body) == 0 && method != http.MethodPost {
		ar.kind = bodyNone
		return nil
	}
	mediaType := ""
	var params map[string]string
	if ct := h.Get("Content-Type"); ct != "" {
		var err error
		mediaType, params, err = mime.ParseMediaType(ct)
		if err != nil {
			return errBadRequest("The Content-Type header is malformed: "+err.Error()+".", "")
		}
	}
	switch {
	case mediaType == "application/json" || (mediaType == "" && len(ar.body) > 0):
		ar.kind = bodyJSON
		return ar.parseJSON()
	case mediaType == "multipart/form-data":
		ar.kind = bodyMultipart
		ar.boundary = params["boundary"]
		return ar.parseMultipart()
	case jsonEndpoints[ar.endpoint] || startsLikeJSONObject(ar.body):
		// A JSON endpoint called with another type, as `curl -d` does
		// (form-urlencoded), or a JSON object sent as text/plain to any
		// endpoint: the upstream reads JSON whatever the type says, so the
		// relay inspects it as JSON too (its model and ids are checked) and
		// sends exactly what it inspected, as application/json. If it is
		// not JSON, the client learns so.
		ar.kind = bodyJSON
		ar.fixContentType = true
		return ar.parseJSON()
	case len(ar.body) == 0:
		ar.kind = bodyNone
		return nil
	default:
		ar.kind = bodyOther
		return nil
	}
}

// emptyObjectAt reports whether the object whose members start at body[at]
// has none: a member spliced in there takes no comma.
func emptyObjectAt(body []byte, at int) bool {
	rest := bytes.TrimLeft(body[at:], " \t\r\n")
	return len(rest) > 0 && rest[0] == '}'
}

// startsLikeJSONObject reports whether a body starts as a JSON object does.
func startsLikeJSONObject(body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{'
}

func (ar *apiRequest) parseJSON() *apiError {
	if len(ar.body) == 0 {
		return errBadRequest("The request body is empty: this endpoint takes a JSON object.", "")
	}
	if !utf8.Valid(ar.body) {
		return errBadRequest("We could not parse the JSON body of your request: it is not valid UTF-8.", "")
	}
	// json.Valid checks the syntax in full (and a nesting limit) without
	// allocating; the member scan below may then assume well-formed input.
	if !json.Valid(ar.body) {
		return errBadRequest("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", "")
	}
	var bad *apiError
	models := 0
	ok := eachMember(ar.body, func(key []byte, start, end int) {
		raw := ar.body[start:end]
		switch string(key) {
		case "model":
			var m string
			if err := json.Unmarshal(raw, &m); err != nil {
				bad = errBadRequest("Invalid type for 'model': expected a string.", "model")
				return
			}
			models++
			ar.model = m
			ar.modelSpan = [2]int{start, end}
		case "stream":
			ar.stream = bytes.Equal(raw, []byte("true"))
		case "session":
			// realtime/client_secrets names its model inside the session
			// (session.model): the allow-list applies to it as well.
			if ar.endpoint == "realtime/client_secrets" {
				if v, ok := member(raw, "model"); ok {
					var m string
					if json.Unmarshal(v, &m) != nil {
						bad = errBadRequest("Invalid type for 'session.model': expected a string.", "session.model")
						return
					}
					models++
					ar.model, ar.nestedModel = m, true
				}
			}
		case "previous_response_id":
			_ = json.Unmarshal(raw, &ar.previousResponse)
		case "stream_options":
			ar.streamOptions, ar.streamOptionsAt = raw, start
			if v, ok := member(raw, "include_usage"); ok && bytes.Equal(v, []byte("true")) {
				ar.wantsUsage = true
			}
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n > ar.maxOut {
				ar.maxOut = min(n, maxTokenCount)
			}
		default:
			for _, name := range caseSensitiveMembers {
				if bytes.EqualFold(key, []byte(name)) {
					bad = errBadRequest(fmt.Sprintf("Unrecognized request argument supplied: %s. Did you mean '%s'?", truncateForMessage(string(key)), name), string(key))
				}
			}
		}
	})
	if bad == nil && models > 1 {
		bad = errBadRequest("The request names its model more than once.", "model")
	}
	if !ok {
		return errBadRequest("The request body must be a JSON object.", "")
	}
	return bad
}

// parseMultipart reads the form fields the relay needs (model, stream) and
// skips file contents; the body itself is forwarded untouched.
func (ar *apiRequest) parseMultipart() *apiError {
	if ar.boundary == "" {
		return errBadRequest("The multipart Content-Type has no boundary.", "")
	}
	mr := multipart.NewReader(bytes.NewReader(ar.body), ar.boundary)
	models := 0
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return errBadRequest("The multipart body is malformed: "+err.Error()+".", "")
		}
		name := part.FormName()
		if name == "model" && part.FileName() != "" {
			return errBadRequest("The model part of the form must be a plain field, not a file.", "model")
		}
		if part.FileName() != "" || (name != "model" && name != "stream") {
			continue
		}
		value, err := io.ReadAll(io.LimitReader(part, 4096))
		if err != nil {
			return errBadRequest("The multipart body is malformed: "+err.Error()+".", "")
		}
		switch name {
		case "model":
			// Servers disagree on which of two parts counts (the first, the
			// last): a second one could choose the model upstream past the
			// allow-list, so the relay refuses it.
			if models++; models > 1 {
				return errBadRequest("The request names its model more than once.", "model")
			}
			if !utf8.Valid(value) {
				return errBadRequest("Invalid 'model': it is not valid UTF-8.", "model")
			}
			ar.model = string(value)
		case "stream":
			ar.stream = string(value) == "true"
		}
	}
}

// needsUsageOption reports whether the relay must ask the upstream for a
// stream's usage itself: chat and legacy completions streams carry usage
// only when stream_options.include_usage is set.
func (ar *apiRequest) needsUsageOption() bool {
	return ar.stream && !ar.wantsUsage && ar.kind == bodyJSON &&
		(ar.endpoint == "chat/completions" || ar.endpoint == "completions")
}

// bodyFor returns the body to send to an upstream that knows the model as
// upstreamModel: the alias spliced in where it differs, and
// stream_options.include_usage set when withUsage.
func (ar *apiRequest) bodyFor(upstreamModel string, withUsage bool) ([]byte, error) {
	aliased := upstreamModel != ar.model && ar.model != "" && !ar.nestedModel
	if !aliased && !withUsage {
		return ar.body, nil
	}
	if ar.kind == bodyMultipart {
		if !aliased {
			return ar.body, nil
		}
		return rewriteMultipartField(ar.body, ar.boundary, "model", upstreamModel)
	}
	if ar.kind != bodyJSON {
		return ar.body, nil
	}
	// Splices, from the end of the body backwards so that earlier offsets
	// stay valid: the model value, and stream_options.
	type splice struct {
		from, to int
		with     []byte
	}
	var edits []splice
	if aliased {
		quoted, err := json.Marshal(upstreamModel)
		if err != nil {
			return nil, err
		}
		if ar.modelSpan[0] < 0 {
			// The model was the API's default, not in the body: name it.
			at := bytes.IndexByte(ar.body, '{') + 1
			member := slices.Concat([]byte(`"model":`), quoted)
			if !emptyObjectAt(ar.body, at) {
				member = append(member, ',')
			}
			edits = append(edits, splice{at, at, member})
		} else {
			edits = append(edits, splice{ar.modelSpan[0], ar.modelSpan[1], quoted})
		}
	}
	if withUsage {
		if ar.streamOptions != nil {
			var opts map[string]json.RawMessage
			_ = json.Unmarshal(ar.streamOptions, &opts) // null or not an object: replaced
			if opts == nil {
				opts = map[string]json.RawMessage{}
			}
			opts["include_usage"] = json.RawMessage("true")
			merged, err := json.Marshal(opts)
			if err != nil {
				return nil, err
			}
			from := ar.streamOptionsAt
			edits = append(edits, splice{from, from + len(ar.streamOptions), merged})
		} else {
			at := bytes.IndexByte(ar.body, '{') + 1
			member := []byte(`"stream_options":{"include_usage":true}`)
			if !emptyObjectAt(ar.body, at) {
				member = append(member, ',')
			}
			edits = append(edits, splice{at, at, member})
		}
	}
	slices.SortFunc(edits, func(a, b splice) int { return b.from - a.from })
	out := slices.Clone(ar.body)
	for _, e := range edits {
		out = slices.Concat(out[:e.from], e.with, out[e.to:])
	}
	return out, nil
}

// rewriteMultipartField re-encodes a multipart body with one form field's
// value replaced, keeping the boundary, every part's headers and contents.
func rewriteMultipartField(body []byte, boundary, field, value string) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(body) + len(value))
	mw := multipart.NewWriter(&out)
	if err := mw.SetBoundary(boundary); err != nil {
		return nil, err
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		pw, err := mw.CreatePart(part.Header)
		if err != nil {
			return nil, err
		}
		if part.FormName() == field && part.FileName() == "" {
			_, err = io.WriteString(pw, value)
		} else {
			_, err = io.Copy(pw, part)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// eachMember calls fn with the name (unescaped; valid during the call only)
// and value byte range of every member of the top-level JSON object in data.
// It returns false if the document is not an object. Given invalid JSON it
// still ends, but the members it reports are meaningless: validate first
// where that matters. It allocates only for names with escapes.
func eachMember(data []byte, fn func(key []byte, start, end int)) bool {
	return eachMemberSpan(data, func(key []byte, _, start, end int) { fn(key, start, end) })
}

// eachMemberSpan is eachMember that also gives where the member's name
// starts, for callers that cut whole members out.
func eachMemberSpan(data []byte, fn func(key []byte, keyStart, start, end int)) bool {
	return jsonscan.Members(data, func(keyStart, keyEnd, start, end int) {
		name := data[keyStart+1 : keyEnd-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var unescaped string
			_ = json.Unmarshal(data[keyStart:keyEnd], &unescaped)
			name = []byte(unescaped)
		}
		fn(name, keyStart, start, end)
	})
}

// removeMember returns data without its top-level member name (and the
// comma that separated it), or data itself if there is none. It writes into
// dst's spare capacity.
func removeMember(dst, data []byte, name string) []byte {
	from, to := -1, -1
	eachMemberSpan(data, func(key []byte, keyStart, _, end int) {
		if string(key) == name && from < 0 {
			from, to = keyStart, end
		}
	})
	if from < 0 {
		return data
	}
	// Take the comma before the member, or, for the first member, the one
	// after it.
	if j := lastNonSpace(data, from-1); j >= 0 && data[j] == ',' {
		from = j
	} else if j := jsonscan.Space(data, to); j < len(data) && data[j] == ',' {
		to = j + 1
	}
	dst = append(dst, data[:from]...)
	return append(dst, data[to:]...)
}

func lastNonSpace(data []byte, i int) int {
	for ; i >= 0; i-- {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return i
}

// readBody reads the whole request body into buf, bounded by MaxBodySize. It
// is read before anything is sent upstream so that it can be checked, routed
// by its model and replayed on a retry.
func (rl *Relay) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) *apiError {
	if r.ContentLength > rl.MaxBodySize {
		return errBodyTooLarge(rl.MaxBodySize)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	// Room for what the client announced, within reason: a client that
	// announces a large body and sends little must not make the relay hold
	// the announced size.
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, maxPreallocatedBody)))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, rl.MaxBodySize))
	if err == nil {
		return nil
	}
	if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
		return errBodyTooLarge(rl.MaxBodySize)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || r.Context().Err() != nil {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Message: "The request body ended before its declared length."}
	}
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error",
		Message: "The request body could not be read: " + err.Error()}
}

// bufferPool recycles request body buffers. Buffers that grew past
// maxPooledBuffer are dropped so one huge upload does not stay pinned.
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBuffer = 1 << 20

// maxPreallocatedBody bounds the buffer reserved from Content-Length before
// the body arrives; a larger body grows it as it comes.
const maxPreallocatedBody = 256 << 10

func getBuffer() *bytes.Buffer {
	buf := bufferPool.Get().(*bytes.Buffer)
	buf.Reset()
	return buf
}

func putBuffer(buf *bytes.Buffer) {
	if buf != nil && buf.Cap() <= maxPooledBuffer {
		bufferPool.Put(buf)
	}
}
