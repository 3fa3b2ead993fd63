package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/caddyrelay/openairelay/internal/jsonscan"
	"github.com/caddyrelay/openairelay/internal/sse"
)

// ErrNotConvertible is returned when an answer cannot be served in the other form:
// the wrong kind of object, an answer that did not complete, an error event, or an
// endpoint that never streams.
var ErrNotConvertible = errors.New("cache: answer cannot be converted")

func notConvertible(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotConvertible}, args...)...)
}

// ToSSE converts a stored non-stream answer of endpoint ep into the event stream that a
// stream request would have received. includeUsage is the request's
// stream_options.include_usage (the Responses API always reports usage).
func ToSSE(ep Endpoint, body []byte, includeUsage bool) ([]byte, error) {
	switch ep {
	case EndpointChatCompletions:
		return ChatToSSE(body, includeUsage)
	case EndpointCompletions:
		return CompletionToSSE(body, includeUsage)
	case EndpointResponses:
		return ResponseToSSE(body)
	}
	return nil, notConvertible("%s answers are never streamed", ep)
}

// FromSSE assembles a stored event stream of endpoint ep into the non-stream answer.
func FromSSE(ep Endpoint, sse []byte) ([]byte, error) {
	switch ep {
	case EndpointChatCompletions:
		return SSEToChat(sse)
	case EndpointCompletions:
		return SSEToCompletion(sse)
	case EndpointResponses:
		return SSEToResponse(sse)
	}
	return nil, notConvertible("%s answers are never streamed", ep)
}

// deltaBytes is the largest text delta the converters emit. A replayed answer needs no
// token-sized pieces, but a few deltas keep clients that render progressively honest.
const deltaBytes = 256

// splitText cuts s into pieces of at most deltaBytes, on UTF-8 boundaries, preferably
// after a space.
func splitText(s []byte) [][]byte {
	var parts [][]byte
	for len(s) > deltaBytes {
		cut := deltaBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if sp := bytes.LastIndexByte(s[:cut], ' '); sp >= deltaBytes/2 {
			cut = sp + 1
		}
		if cut == 0 {
			cut = deltaBytes // not UTF-8 at all: any cut will do
		}
		parts = append(parts, s[:cut])
		s = s[cut:]
	}
	return append(parts, s)
}

// compact returns body without insignificant whitespace, so that its pieces can be
// copied into single-line SSE data.
func compact(body []byte) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(body))
	if err := json.Compact(&b, body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return b.Bytes(), nil
}

// key appends `,"name":` (or without the comma for the first member).
func appendKey(b []byte, name string) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' && b[n-1] != '[' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

// appendField appends a member whose name may need escaping.
func appendField(b []byte, name string, val []byte) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' && b[n-1] != '[' {
		b = append(b, ',')
	}
	b = appendQuoted(b, []byte(name))
	b = append(b, ':')
	return append(b, val...)
}

func orNull(raw []byte) []byte {
	if len(raw) == 0 {
		return []byte("null")
	}
	return raw
}

// rewrite returns the object fs with the members named in repl (name, JSON value
// pairs) replaced, in their original order; names that fs lacks are not added.
func rewrite(fs []field, repl ...string) []byte {
	b := []byte{'{'}
	for _, f := range fs {
		v := f.val
		for i := 0; i < len(repl); i += 2 {
			if repl[i] == f.key {
				v = []byte(repl[i+1])
			}
		}
		b = appendField(b, f.key, v)
	}
	return append(b, '}')
}

// ---- Chat completions ------------------------------------------------------------

// ChatToSSE converts a chat.completion object into the chat.completion.chunk events
// that a stream request would have received, ending in "data: [DONE]". Each choice
// keeps its index and gets a first chunk with the role (and any field the converter
// does not know, such as reasoning_content), its content and refusal in a few
// deltas, its tool calls (id, type and name first, then the arguments), annotations,
// audio, and a last chunk with the finish reason. Every chunk carries the answer's id,
// created, model, service_tier and system_fingerprint. With includeUsage every chunk
// has "usage":null and a final chunk with no choices carries the usage.
func ChatToSSE(body []byte, includeUsage bool) ([]byte, error) {
	body, err := compact(body)
	if err != nil {
		return nil, err
	}
	top, err := objectFields(body)
	if err != nil {
		return nil, err
	}
	if obj, _ := decodeString(get(top, "object")); string(obj) != "chat.completion" {
		return nil, notConvertible("object is %q, not chat.completion", obj)
	}
	choices, err := arrayElems(get(top, "choices"))
	if err != nil {
		return nil, err
	}

	// Every chunk is head + choice + tail; the first one also carries the answer's
	// members the converter does not know.
	head := appendKey([]byte{'{'}, "id")
	head = append(head, orNull(get(top, "id"))...)
	head = append(appendKey(head, "object"), `"chat.completion.chunk"`...)
	head = append(appendKey(head, "created"), orNull(get(top, "created"))...)
	head = append(appendKey(head, "model"), orNull(get(top, "model"))...)
	for _, name := range []string{"service_tier", "system_fingerprint"} {
		if v := get(top, name); v != nil {
			head = append(appendKey(head, name), v...)
		}
	}
	first := slices.Clone(head)
	for _, f := range top {
		switch f.key {
		case "id", "object", "created", "model", "service_tier", "system_fingerprint", "choices", "usage":
		default:
			first = appendField(first, f.key, f.val)
		}
	}
	head = append(appendKey(head, "choices"), '[')
	first = append(appendKey(first, "choices"), '[')
	tail := "]}"
	if includeUsage {
		tail = `],"usage":null}`
	}

	out := make([]byte, 0, 2*len(body)+512)
	emitted := false
	chunk := func(choice []byte) {
		out = append(out, "data: "...)
		if emitted {
			out = append(out, head...)
		} else {
			out = append(out, first...)
			emitted = true
		}
		out = append(out, choice...)
		out = append(out, tail...)
		out = append(out, "\n\n"...)
	}
	for i, raw := range choices {
		if err := chatChoiceChunks(raw, i, chunk); err != nil {
			return nil, err
		}
	}
	if includeUsage || !emitted {
		out = append(out, "data: "...)
		if emitted {
			out = append(out, head...)
		} else {
			out = append(out, first...)
		}
		out = append(out, ']')
		if includeUsage {
			out = append(out, `,"usage":`...)
			out = append(out, orNull(get(top, "usage"))...)
		}
		out = append(out, "}\n\n"...)
	}
	return append(out, "data: [DONE]\n\n"...), nil
}

// chatChoiceChunks emits the chunks of one choice of a chat completion.
func chatChoiceChunks(raw []byte, pos int, chunk func([]byte)) error {
	cf, err := objectFields(raw)
	if err != nil {
		return err
	}
	index := get(cf, "index")
	if index == nil {
		index = strconv.AppendInt(nil, int64(pos), 10)
	}
	msg, err := objectFields(orEmptyObject(get(cf, "message")))
	if err != nil {
		return err
	}
	logprobs := get(cf, "logprobs")
	if isNull(logprobs) {
		logprobs = nil
	}
	// With logprobs, each text goes in one delta carrying all of them, so that the
	// tokens stay with their text.
	split := splitText
	if logprobs != nil {
		split = func(s []byte) [][]byte { return [][]byte{s} }
	}

	emit := func(delta []byte, lp []byte, finish []byte, extra []field) {
		c := append(appendKey([]byte{'{'}, "index"), index...)
		c = append(appendKey(c, "delta"), delta...)
		c = append(appendKey(c, "logprobs"), orNull(lp)...)
		c = append(appendKey(c, "finish_reason"), orNull(finish)...)
		for _, f := range extra {
			c = appendField(c, f.key, f.val)
		}
		chunk(append(c, '}'))
	}
	takeLogprobs := func() []byte {
		lp := logprobs
		logprobs = nil
		return lp
	}

	content, _ := decodeString(get(msg, "content"))
	refusal, _ := decodeString(get(msg, "refusal"))

	// First chunk: role, empty content (null when the answer has none), refusal null,
	// and whatever else the message holds that is not streamed piecewise below.
	d := appendKey([]byte{'{'}, "role")
	d = append(d, orDefault(get(msg, "role"), `"assistant"`)...)
	d = appendKey(d, "content")
	switch v := get(msg, "content"); {
	case isNull(v):
		d = append(d, "null"...)
	case v[0] == '"':
		d = append(d, `""`...)
	default:
		d = append(d, v...) // content parts from a compatible server: sent whole
	}
	d = append(appendKey(d, "refusal"), "null"...)
	for _, f := range msg {
		switch f.key {
		case "role", "content", "refusal", "tool_calls", "function_call", "audio", "annotations":
		default:
			d = appendField(d, f.key, f.val)
		}
	}
	var firstLP []byte
	if len(content) == 0 && len(refusal) == 0 {
		firstLP = takeLogprobs()
	}
	emit(append(d, '}'), firstLP, nil, nil)

	if len(content) > 0 {
		for _, p := range split(content) {
			d := appendQuoted(appendKey([]byte{'{'}, "content"), p)
			emit(append(d, '}'), takeLogprobs(), nil, nil)
		}
	}
	if len(refusal) > 0 {
		for _, p := range split(refusal) {
			d := appendQuoted(appendKey([]byte{'{'}, "refusal"), p)
			emit(append(d, '}'), takeLogprobs(), nil, nil)
		}
	}
	if v := get(msg, "annotations"); v != nil && v[0] == '[' && string(v) != "[]" {
		emit(append(append(appendKey([]byte{'{'}, "annotations"), v...), '}'), nil, nil, nil)
	}
	for _, name := range []string{"audio", "function_call"} {
		if v := get(msg, name); !isNull(v) {
			emit(append(append(appendKey([]byte{'{'}, name), v...), '}'), nil, nil, nil)
		}
	}
	if v := get(msg, "tool_calls"); !isNull(v) {
		calls, err := arrayElems(v)
		if err != nil {
			return err
		}
		for j, call := range calls {
			if err := toolCallChunks(call, j, emit); err != nil {
				return err
			}
		}
	}

	// Last chunk: the finish reason, and the choice's members the converter does not
	// know (such as content filter results).
	var extra []field
	for _, f := range cf {
		switch f.key {
		case "index", "message", "logprobs", "finish_reason":
		default:
			extra = append(extra, f)
		}
	}
	emit([]byte("{}"), nil, orNull(get(cf, "finish_reason")), extra)
	return nil
}

// toolCallChunks emits one tool call: a chunk that opens it with its id, type and
// function name, and then its arguments. Tool calls of other types (custom tools)
// are sent whole in one chunk.
func toolCallChunks(raw []byte, j int, emit func(delta, lp, finish []byte, extra []field)) error {
	tf, err := objectFields(raw)
	if err != nil {
		return err
	}
	open := func() []byte {
		d := append(appendKey([]byte{'{'}, "tool_calls"), '[')
		return strconv.AppendInt(appendKey(append(d, '{'), "index"), int64(j), 10)
	}
	fn := get(tf, "function")
	typ, _ := decodeString(get(tf, "type"))
	if fn == nil || (len(typ) > 0 && string(typ) != "function") {
		d := open()
		for _, f := range tf {
			if f.key != "index" {
				d = appendField(d, f.key, f.val)
			}
		}
		emit(append(d, "}]}"...), nil, nil, nil)
		return nil
	}
	ff, err := objectFields(fn)
	if err != nil {
		return err
	}
	d := open()
	for _, f := range tf {
		switch f.key {
		case "index":
		case "function":
			d = append(appendKey(d, "function"), '{')
			for _, g := range ff {
				if g.key == "arguments" {
					d = append(appendKey(d, "arguments"), `""`...)
				} else {
					d = appendField(d, g.key, g.val)
				}
			}
			d = append(d, '}')
		default:
			d = appendField(d, f.key, f.val)
		}
	}
	emit(append(d, "}]}"...), nil, nil, nil)
	args, _ := decodeString(get(ff, "arguments"))
	for _, p := range splitText(args) {
		if len(p) == 0 {
			continue
		}
		d := append(appendKey(open(), "function"), '{')
		d = appendQuoted(appendKey(d, "arguments"), p)
		emit(append(d, "}}]}"...), nil, nil, nil)
	}
	return nil
}

func orEmptyObject(raw []byte) []byte {
	if isNull(raw) {
		return []byte("{}")
	}
	return raw
}

func orDefault(raw []byte, def string) []byte {
	if isNull(raw) {
		return []byte(def)
	}
	return raw
}

// SSEToChat assembles a chat.completion.chunk stream into the chat.completion object a
// non-stream request would have received: per choice index, content and refusal
// concatenated, tool calls assembled by index, the last finish reason and the
// logprobs joined; the usage of the final chunk; the id, created, model,
// service_tier and system_fingerprint of the chunks. Fields it does not know are
// merged generically: strings concatenated, arrays joined, objects merged.
func SSEToChat(sse []byte) ([]byte, error) {
	return assemble(sse, true)
}

// assembler accumulates the chunks of a chat or legacy completion stream.
type assembler struct {
	chat    bool
	chunks  int
	top     accum // id, created, model, service_tier, system_fingerprint and unknown members
	usage   []byte
	choices []*choiceAccum
}

type choiceAccum struct {
	index    int
	indexRaw []byte
	msg      *accum // chat: the message built from the deltas
	text     []byte // legacy completions: the text
	logprobs accum
	finish   []byte
	extra    accum
}

func assemble(stream []byte, chat bool) ([]byte, error) {
	a := assembler{chat: chat}
	for ev := range sse.Events(stream) {
		data := bytes.TrimSpace(ev.Data)
		if string(data) == "[DONE]" {
			break
		}
		if err := a.chunk(data); err != nil {
			return nil, err
		}
	}
	if a.chunks == 0 {
		return nil, notConvertible("stream has no chunks")
	}
	return a.result(), nil
}

func (a *assembler) chunk(data []byte) error {
	// The parts are copied into the answer as they are: check them in full first.
	if !json.Valid(data) {
		return jsonscan.SyntaxError(0, "chunk is not valid JSON")
	}
	fs, err := objectFields(data)
	if err != nil {
		return err
	}
	if e := get(fs, "error"); e != nil {
		return notConvertible("stream carries an error: %s", e)
	}
	a.chunks++
	for _, f := range fs {
		switch f.key {
		case "object", "obfuscation":
			// object changes; obfuscation is per-chunk padding.
		case "usage":
			if !isNull(f.val) {
				a.usage = f.val
			}
		case "choices":
			cs, err := arrayElems(f.val)
			if err != nil {
				return err
			}
			for _, c := range cs {
				if err := a.choice(c); err != nil {
					return err
				}
			}
		default:
			if !isNull(f.val) {
				if err := a.top.child(f.key).merge(f.val, true); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (a *assembler) choice(raw []byte) error {
	fs, err := objectFields(raw)
	if err != nil {
		return err
	}
	idxRaw := get(fs, "index")
	idx, err := strconv.Atoi(string(idxRaw))
	if err != nil {
		return notConvertible("choice index %q", idxRaw)
	}
	var c *choiceAccum
	for _, x := range a.choices {
		if x.index == idx {
			c = x
		}
	}
	if c == nil {
		c = &choiceAccum{index: idx, indexRaw: idxRaw}
		if a.chat {
			// Fix the order of the members every message has.
			c.msg = &accum{kind: 'o'}
			c.msg.child("role").merge([]byte(`"assistant"`), true)
			c.msg.child("content")
			c.msg.child("refusal")
		}
		a.choices = append(a.choices, c)
	}
	for _, f := range fs {
		switch f.key {
		case "index":
		case "delta":
			if !isNull(f.val) && f.val[0] != '{' {
				return notConvertible("delta is not an object")
			}
			if c.msg != nil {
				if err := c.msg.merge(f.val, false); err != nil {
					return err
				}
			}
		case "text":
			if !a.chat {
				s, ok := decodeString(f.val)
				if !ok && !isNull(f.val) {
					return notConvertible("text is not a string")
				}
				c.text = append(c.text, s...)
			}
		case "logprobs":
			if err := c.logprobs.merge(f.val, false); err != nil {
				return err
			}
		case "finish_reason":
			if !isNull(f.val) {
				c.finish = f.val
			}
		default:
			if err := c.extra.child(f.key).merge(f.val, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *assembler) result() []byte {
	b := appendKey([]byte{'{'}, "id")
	b = append(b, a.top.rawOf("id")...)
	b = appendKey(b, "object")
	if a.chat {
		b = append(b, `"chat.completion"`...)
	} else {
		b = append(b, `"text_completion"`...)
	}
	b = append(appendKey(b, "created"), a.top.rawOf("created")...)
	b = append(appendKey(b, "model"), a.top.rawOf("model")...)
	b = append(appendKey(b, "choices"), '[')
	slices.SortFunc(a.choices, func(x, y *choiceAccum) int { return x.index - y.index })
	for i, c := range a.choices {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendKey(append(b, '{'), "index"), c.indexRaw...)
		if a.chat {
			// OpenAI answers a tool call with content null, while its
			// stream may open with an empty content delta.
			if cont := c.msg.get("content"); cont != nil && cont.kind == 's' && len(cont.str) == 0 {
				if calls := c.msg.get("tool_calls"); calls != nil && calls.kind != 0 {
					cont.kind = 0
				}
			}
			b = c.msg.appendJSON(appendKey(b, "message"))
		} else {
			b = appendQuoted(appendKey(b, "text"), c.text)
		}
		b = c.logprobs.appendJSON(appendKey(b, "logprobs"))
		b = append(appendKey(b, "finish_reason"), orNull(c.finish)...)
		for j, k := range c.extra.keys {
			b = c.extra.vals[j].appendJSON(appendField(b, k, nil))
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if a.usage != nil {
		b = append(appendKey(b, "usage"), a.usage...)
	}
	for _, name := range []string{"service_tier", "system_fingerprint"} {
		if v := a.top.get(name); v != nil {
			b = v.appendJSON(appendKey(b, name))
		}
	}
	for j, k := range a.top.keys {
		switch k {
		case "id", "created", "model", "service_tier", "system_fingerprint":
		default:
			b = a.top.vals[j].appendJSON(appendField(b, k, nil))
		}
	}
	return append(b, '}')
}

// accum merges streamed JSON deltas into one value: strings are concatenated, arrays
// joined, objects merged member by member, other values replaced; null changes
// nothing. tool_calls arrays are merged by their elements' index instead.
type accum struct {
	kind  byte // 0 null, 's' string, 'r' raw scalar, 'a' array, 'o' object, 't' tool calls
	str   []byte
	raw   []byte // 'r': the value; 'a': the elements joined by commas
	keys  []string
	vals  []*accum
	calls []*accum // 't': by first appearance
	idx   []int    // 't': the index of each call
}

// replaced are the members whose repeated values replace, not extend, the previous
// one: identifiers and enumerations.
var replaced = map[string]bool{
	"id": true, "type": true, "role": true, "name": true, "index": true,
	"object": true, "expires_at": true, "finish_reason": true, "call_id": true,
}

func (a *accum) get(key string) *accum {
	for i, k := range a.keys {
		if k == key {
			return a.vals[i]
		}
	}
	return nil
}

func (a *accum) child(key string) *accum {
	if v := a.get(key); v != nil {
		return v
	}
	v := &accum{}
	a.keys = append(a.keys, key)
	a.vals = append(a.vals, v)
	return v
}

// rawOf returns the JSON of the member key, or null.
func (a *accum) rawOf(key string) []byte {
	if v := a.get(key); v != nil {
		return v.appendJSON(nil)
	}
	return []byte("null")
}

func (a *accum) merge(raw []byte, replace bool) error {
	if isNull(raw) {
		return nil
	}
	switch raw[0] {
	case '"':
		if a.kind != 's' || replace {
			a.kind, a.str = 's', a.str[:0]
		}
		var ok bool
		if a.str, ok = appendString(a.str, raw); !ok {
			return jsonscan.SyntaxError(0, "invalid string")
		}
	case '[':
		es, err := arrayElems(raw)
		if err != nil {
			return err
		}
		if a.kind != 'a' || replace {
			a.kind, a.raw = 'a', nil
		}
		for _, e := range es {
			if len(a.raw) > 0 {
				a.raw = append(a.raw, ',')
			}
			a.raw = append(a.raw, e...)
		}
	case '{':
		fs, err := objectFields(raw)
		if err != nil {
			return err
		}
		if a.kind != 'o' {
			*a = accum{kind: 'o'}
		}
		for _, f := range fs {
			c := a.child(f.key)
			if f.key == "tool_calls" {
				err = c.mergeCalls(f.val)
			} else {
				err = c.merge(f.val, replaced[f.key])
			}
			if err != nil {
				return err
			}
		}
	default:
		a.kind, a.raw = 'r', raw
	}
	return nil
}

func (a *accum) mergeCalls(raw []byte) error {
	if isNull(raw) {
		return nil
	}
	es, err := arrayElems(raw)
	if err != nil {
		return err
	}
	a.kind = 't'
	for _, e := range es {
		fs, err := objectFields(e)
		if err != nil {
			return err
		}
		idx := len(a.calls)
		if v := get(fs, "index"); v != nil {
			if idx, err = strconv.Atoi(string(v)); err != nil {
				return notConvertible("tool call index %q", v)
			}
		}
		var call *accum
		for i, x := range a.idx {
			if x == idx {
				call = a.calls[i]
			}
		}
		if call == nil {
			call = &accum{kind: 'o'}
			a.calls = append(a.calls, call)
			a.idx = append(a.idx, idx)
		}
		if err := call.merge(e, false); err != nil {
			return err
		}
	}
	return nil
}

func (a *accum) appendJSON(b []byte) []byte {
	switch a.kind {
	case 's':
		return appendQuoted(b, a.str)
	case 'r':
		return append(b, a.raw...)
	case 'a':
		return append(append(append(b, '['), a.raw...), ']')
	case 'o':
		b = append(b, '{')
		for i, k := range a.keys {
			b = a.vals[i].appendJSON(appendField(b, k, nil))
		}
		return append(b, '}')
	case 't':
		order := make([]int, len(a.calls))
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(x, y int) int { return a.idx[x] - a.idx[y] })
		b = append(b, '[')
		for n, i := range order {
			if n > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			call := a.calls[i]
			for j, k := range call.keys {
				if k != "index" { // the index only orders the deltas
					b = call.vals[j].appendJSON(appendField(b, k, nil))
				}
			}
			b = append(b, '}')
		}
		return append(b, ']')
	}
	return append(b, "null"...)
}

// ---- Legacy completions ----------------------------------------------------------

// CompletionToSSE converts a text_completion object into the events a stream request
// would have received: per choice one chunk with the text (and its logprobs) and one
// with the finish reason; with includeUsage every chunk has "usage":null and a final
// chunk with no choices carries the usage; then "data: [DONE]".
func CompletionToSSE(body []byte, includeUsage bool) ([]byte, error) {
	body, err := compact(body)
	if err != nil {
		return nil, err
	}
	top, err := objectFields(body)
	if err != nil {
		return nil, err
	}
	if obj, _ := decodeString(get(top, "object")); string(obj) != "text_completion" {
		return nil, notConvertible("object is %q, not text_completion", obj)
	}
	choices, err := arrayElems(get(top, "choices"))
	if err != nil {
		return nil, err
	}
	// Legacy chunks put choices before model, as OpenAI does.
	head := appendKey([]byte{'{'}, "id")
	head = append(head, orNull(get(top, "id"))...)
	head = append(appendKey(head, "object"), `"text_completion"`...)
	head = append(appendKey(head, "created"), orNull(get(top, "created"))...)
	head = append(appendKey(head, "choices"), '[')
	tail := appendKey([]byte{']'}, "model")
	tail = append(tail, orNull(get(top, "model"))...)
	if v := get(top, "system_fingerprint"); v != nil {
		tail = append(appendKey(tail, "system_fingerprint"), v...)
	}
	for _, f := range top {
		switch f.key {
		case "id", "object", "created", "model", "system_fingerprint", "choices", "usage":
		default:
			tail = appendField(tail, f.key, f.val)
		}
	}
	out := make([]byte, 0, 2*len(body)+512)
	chunk := func(choice []byte, usage []byte) {
		out = append(out, "data: "...)
		out = append(out, head...)
		out = append(out, choice...)
		out = append(out, tail...)
		if includeUsage {
			out = append(appendKey(out, "usage"), orNull(usage)...)
		}
		out = append(out, "}\n\n"...)
	}
	for i, raw := range choices {
		cf, err := objectFields(raw)
		if err != nil {
			return nil, err
		}
		index := get(cf, "index")
		if index == nil {
			index = strconv.AppendInt(nil, int64(i), 10)
		}
		text, _ := decodeString(get(cf, "text"))
		logprobs := get(cf, "logprobs")
		parts := splitText(text)
		if !isNull(logprobs) {
			parts = [][]byte{text}
		}
		for n, p := range parts {
			c := append(appendKey([]byte{'{'}, "text"), appendQuoted(nil, p)...)
			c = append(appendKey(c, "index"), index...)
			lp := []byte("null")
			if n == 0 {
				lp = orNull(logprobs)
			}
			c = append(appendKey(c, "logprobs"), lp...)
			chunk(append(appendKey(c, "finish_reason"), "null}"...), nil)
		}
		c := append(appendKey([]byte{'{'}, "text"), `""`...)
		c = append(appendKey(c, "index"), index...)
		c = append(appendKey(c, "logprobs"), "null"...)
		c = append(appendKey(c, "finish_reason"), orNull(get(cf, "finish_reason"))...)
		for _, f := range cf {
			switch f.key {
			case "text", "index", "logprobs", "finish_reason":
			default:
				c = appendField(c, f.key, f.val)
			}
		}
		chunk(append(c, '}'), nil)
	}
	if includeUsage {
		chunk(nil, get(top, "usage"))
	}
	return append(out, "data: [DONE]\n\n"...), nil
}

// SSEToCompletion assembles a legacy text_completion stream into the object a
// non-stream request would have received: per choice index the text concatenated,
// the logprobs arrays joined and the last finish reason; the final usage.
func SSEToCompletion(sse []byte) ([]byte, error) {
	return assemble(sse, false)
}

// ---- Responses -------------------------------------------------------------------

// ResponseToSSE converts a completed (or incomplete) response object into the event
// sequence of a stream request: response.created and response.in_progress (the
// response without output or usage), then per output item output_item.added, its
// parts (content_part.added, output_text.delta, annotation.added, output_text.done,
// content_part.done for a message; function_call_arguments.delta and .done for a
// function call; reasoning_summary_part/text events for reasoning), output_item.done,
// and finally response.completed (or response.incomplete) with the response as is.
// Events carry a sequence_number from 0.
func ResponseToSSE(body []byte) ([]byte, error) {
	body, err := compact(body)
	if err != nil {
		return nil, err
	}
	top, err := objectFields(body)
	if err != nil {
		return nil, err
	}
	if obj, _ := decodeString(get(top, "object")); string(obj) != "response" {
		return nil, notConvertible("object is %q, not response", obj)
	}
	status, _ := decodeString(get(top, "status"))
	terminal := ""
	switch string(status) {
	case "completed":
		terminal = "response.completed"
	case "incomplete":
		terminal = "response.incomplete"
	default:
		return nil, notConvertible("response status %q", status)
	}
	items, err := arrayElems(orDefault(get(top, "output"), "[]"))
	if err != nil {
		return nil, err
	}

	w := &eventWriter{b: make([]byte, 0, 3*len(body)+1024)}
	started := rewrite(top, "status", `"in_progress"`, "output", "[]", "usage", "null",
		"incomplete_details", "null", "error", "null", "completed_at", "null")
	for _, name := range []string{"response.created", "response.in_progress"} {
		w.begin(name)
		w.raw("response", started)
		w.end()
	}
	for i, item := range items {
		if err := w.item(i, item); err != nil {
			return nil, err
		}
	}
	w.begin(terminal)
	w.raw("response", body)
	w.end()
	return w.b, nil
}

// eventWriter writes Responses API events.
type eventWriter struct {
	b   []byte
	seq int
}

func (w *eventWriter) begin(name string) {
	w.b = append(w.b, "event: "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, "\ndata: {"...)
	w.b = append(appendKey(w.b, "type"), '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, '"')
	w.b = strconv.AppendInt(appendKey(w.b, "sequence_number"), int64(w.seq), 10)
	w.seq++
}

func (w *eventWriter) raw(name string, v []byte) { w.b = append(appendKey(w.b, name), v...) }
func (w *eventWriter) str(name string, s []byte) { w.b = appendQuoted(appendKey(w.b, name), s) }
func (w *eventWriter) int(name string, n int) {
	w.b = strconv.AppendInt(appendKey(w.b, name), int64(n), 10)
}
func (w *eventWriter) end() { w.b = append(w.b, "}\n\n"...) }

// at writes the members that place an event in its item.
func (w *eventWriter) at(itemID []byte, output int) {
	w.raw("item_id", orNull(itemID))
	w.int("output_index", output)
}

func (w *eventWriter) item(i int, raw []byte) error {
	fs, err := objectFields(raw)
	if err != nil {
		return err
	}
	typ, _ := decodeString(get(fs, "type"))
	id := get(fs, "id")
	var added []byte
	switch string(typ) {
	case "message":
		added = rewrite(fs, "status", `"in_progress"`, "content", "[]")
	case "function_call":
		added = rewrite(fs, "status", `"in_progress"`, "arguments", `""`)
	case "reasoning":
		added = rewrite(fs, "status", `"in_progress"`, "summary", "[]")
	default:
		added = rewrite(fs, "status", `"in_progress"`)
	}
	w.begin("response.output_item.added")
	w.int("output_index", i)
	w.raw("item", added)
	w.end()

	switch string(typ) {
	case "message":
		parts, err := arrayElems(orDefault(get(fs, "content"), "[]"))
		if err != nil {
			return err
		}
		for j, p := range parts {
			if err := w.contentPart(id, i, j, p); err != nil {
				return err
			}
		}
	case "function_call":
		args, _ := decodeString(get(fs, "arguments"))
		for _, p := range splitText(args) {
			if len(p) > 0 {
				w.begin("response.function_call_arguments.delta")
				w.at(id, i)
				w.str("delta", p)
				w.end()
			}
		}
		w.begin("response.function_call_arguments.done")
		w.at(id, i)
		w.str("arguments", args)
		w.end()
	case "reasoning":
		summary, err := arrayElems(orDefault(get(fs, "summary"), "[]"))
		if err != nil {
			return err
		}
		for k, s := range summary {
			sf, err := objectFields(s)
			if err != nil {
				return err
			}
			text, _ := decodeString(get(sf, "text"))
			w.begin("response.reasoning_summary_part.added")
			w.at(id, i)
			w.int("summary_index", k)
			w.raw("part", rewrite(sf, "text", `""`))
			w.end()
			for _, p := range splitText(text) {
				if len(p) > 0 {
					w.begin("response.reasoning_summary_text.delta")
					w.at(id, i)
					w.int("summary_index", k)
					w.str("delta", p)
					w.end()
				}
			}
			w.begin("response.reasoning_summary_text.done")
			w.at(id, i)
			w.int("summary_index", k)
			w.str("text", text)
			w.end()
			w.begin("response.reasoning_summary_part.done")
			w.at(id, i)
			w.int("summary_index", k)
			w.raw("part", s)
			w.end()
		}
	}

	w.begin("response.output_item.done")
	w.int("output_index", i)
	w.raw("item", raw)
	w.end()
	return nil
}

// contentPart writes the events of one content part of a message item.
func (w *eventWriter) contentPart(id []byte, i, j int, raw []byte) error {
	pf, err := objectFields(raw)
	if err != nil {
		return err
	}
	typ, _ := decodeString(get(pf, "type"))
	open := func(name string) {
		w.begin(name)
		w.at(id, i)
		w.int("content_index", j)
	}
	switch string(typ) {
	case "output_text":
		text, _ := decodeString(get(pf, "text"))
		logprobs := orDefault(get(pf, "logprobs"), "[]")
		open("response.content_part.added")
		w.raw("part", rewrite(pf, "text", `""`, "annotations", "[]", "logprobs", "[]"))
		w.end()
		parts := splitText(text)
		if string(logprobs) != "[]" {
			parts = [][]byte{text} // keep the tokens with their text
		}
		for n, p := range parts {
			open("response.output_text.delta")
			w.str("delta", p)
			if n == 0 {
				w.raw("logprobs", logprobs)
			} else {
				w.raw("logprobs", []byte("[]"))
			}
			w.end()
		}
		annotations, err := arrayElems(orDefault(get(pf, "annotations"), "[]"))
		if err != nil {
			return err
		}
		for k, a := range annotations {
			open("response.output_text.annotation.added")
			w.int("annotation_index", k)
			w.raw("annotation", a)
			w.end()
		}
		open("response.output_text.done")
		w.str("text", text)
		w.raw("logprobs", logprobs)
		w.end()
	case "refusal":
		refusal, _ := decodeString(get(pf, "refusal"))
		open("response.content_part.added")
		w.raw("part", rewrite(pf, "refusal", `""`))
		w.end()
		for _, p := range splitText(refusal) {
			open("response.refusal.delta")
			w.str("delta", p)
			w.end()
		}
		open("response.refusal.done")
		w.str("refusal", refusal)
		w.end()
	default:
		open("response.content_part.added")
		w.raw("part", raw)
		w.end()
	}
	open("response.content_part.done")
	w.raw("part", raw)
	w.end()
	return nil
}

// SSEToResponse returns the response object of a Responses API stream: the response
// of its response.completed (or response.incomplete) event, which is the whole
// answer. A stream that failed or has no such event cannot be converted.
func SSEToResponse(stream []byte) ([]byte, error) {
	for ev := range sse.Events(stream) {
		if !json.Valid(ev.Data) {
			return nil, jsonscan.SyntaxError(0, "event is not valid JSON")
		}
		fs, err := objectFields(ev.Data)
		if err != nil {
			return nil, err
		}
		typ, _ := decodeString(get(fs, "type"))
		if len(typ) == 0 {
			typ = []byte(ev.Name)
		}
		switch string(typ) {
		case "response.completed", "response.incomplete":
			r := get(fs, "response")
			if isNull(r) {
				return nil, notConvertible("%s without a response", typ)
			}
			return bytes.Clone(r), nil
		case "response.failed", "error":
			return nil, notConvertible("stream ended with %s", typ)
		}
	}
	return nil, notConvertible("stream has no response.completed event")
}
