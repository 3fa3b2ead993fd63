package openairelay

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/caddyrelay/openairelay/internal/sse"
)

// usage is what an answer reports it used. cached is the part of prompt
// that the upstream served from its prompt cache (billed at a lower price);
// audioIn and audioOut the parts of prompt and completion that were audio
// (a Realtime response's input_token_details and output_token_details).
type usage struct {
	prompt, completion, total, cached int64
	audioIn, audioOut                 int64
}

// usageOf finds the top-level usage object of a JSON answer and reads its
// counts without decoding the rest of the answer: prompt/completion tokens
// (chat completions, completions, embeddings) or input/output tokens (the
// Responses API), the total, and the cached part of the prompt
// (prompt_tokens_details.cached_tokens, input_tokens_details.cached_tokens,
// and the Realtime API's input_token_details.cached_tokens), and the audio
// parts the Realtime API reports.
func usageOf(body []byte) (usage, bool) {
	raw, ok := member(body, "usage")
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return usage{}, false
	}
	var u usage
	valid := eachMember(raw, func(key []byte, start, end int) {
		var target *int64
		switch string(key) {
		case "prompt_tokens", "input_tokens":
			target = &u.prompt
		case "completion_tokens", "output_tokens":
			target = &u.completion
		case "total_tokens":
			target = &u.total
		case "prompt_tokens_details", "input_tokens_details", "input_token_details":
			u.cached += count(raw[start:end], "cached_tokens")
			u.audioIn += count(raw[start:end], "audio_tokens")
			return
		case "output_token_details", "completion_tokens_details":
			u.audioOut += count(raw[start:end], "audio_tokens")
			return
		default:
			return
		}
		if n, err := strconv.ParseInt(string(raw[start:end]), 10, 64); err == nil && n > 0 {
			*target += n
		}
	})
	if !valid {
		return usage{}, false
	}
	if u.total == 0 {
		u.total = u.prompt + u.completion
	}
	u.cached = min(u.cached, u.prompt)
	u.audioIn, u.audioOut = min(u.audioIn, u.prompt), min(u.audioOut, u.completion)
	return u, true
}

// count is the positive integer member name of a JSON object, else 0.
func count(obj []byte, name string) int64 {
	c, ok := member(obj, name)
	if !ok {
		return 0
	}
	if n, err := strconv.ParseInt(string(c), 10, 64); err == nil && n > 0 {
		return n
	}
	return 0
}

// member returns the raw value of a top-level member of a JSON object.
func member(data []byte, name string) ([]byte, bool) {
	var raw []byte
	eachMember(data, func(key []byte, start, end int) {
		if string(key) == name && raw == nil {
			raw = data[start:end]
		}
	})
	return raw, raw != nil
}

// streamTap watches a server-sent event stream on its way to the client: it
// reads the usage the stream reports and counts its events, and, when the
// relay asked the upstream for usage the client did not ask for, takes that
// usage out again, so that the client receives what it would have received
// without the relay: the final usage-only chunk is dropped and the
// `"usage":null` member of every other chunk removed.
//
// It runs on every event of every stream, so it looks at as little as it
// can: most events carry no usage and are only counted.
type streamTap struct {
	responses bool // a Responses API stream: usage arrives in response.completed
	strip     bool

	parser sse.Parser // events, when the bytes pass through unchanged
	held   []byte     // an incomplete event, when they do not
	out    []byte
	u      usage
	have   bool
	events int
	// answerID is the id of the answer the stream carries: a Responses
	// stream's response id (from response.created), a chat stream's
	// completion id (from its first chunk), for the stored objects a
	// stream creates.
	answerID string
}

func newStreamTap(endpoint string, strip bool) *streamTap {
	return &streamTap{responses: endpoint == "responses", strip: strip}
}

// rewrites reports whether the tap changes the stream's bytes.
func (t *streamTap) rewrites() bool { return t.strip }

// feed takes bytes as they arrive and returns those to send on: p itself
// unless the tap rewrites, in which case complete events are sent and an
// incomplete one is held until its end arrives.
func (t *streamTap) feed(p []byte) []byte {
	if !t.strip {
		t.parser.Feed(p)
		for {
			ev, ok := t.parser.Next()
			if !ok {
				return p
			}
			t.observe(ev.Name, ev.Data)
		}
	}
	t.held = append(t.held, p...)
	t.out = t.out[:0]
	for {
		n := sse.EventLen(t.held)
		if n < 0 {
			break
		}
		t.rewrite(t.held[:n])
		t.held = t.held[n:]
	}
	// Compact the held bytes so the buffer does not grow with the stream.
	if len(t.held) == 0 {
		t.held = t.held[:0:cap(t.held)]
	}
	return t.out
}

// close ends the stream and returns what is left to send: an event the
// upstream did not end with a blank line is sent as it is.
func (t *streamTap) close() []byte {
	if !t.strip || len(t.held) == 0 {
		return nil
	}
	t.out = t.out[:0]
	t.rewrite(t.held)
	t.held = nil
	return t.out
}

var (
	usageMember = []byte(`"usage"`)
	nullValue   = []byte(":null")
	doneData    = []byte("[DONE]")
)

// rewrite appends one raw event to t.out without the usage the client did
// not ask for. OpenAI writes compact JSON, so the common cases are settled on
// the raw bytes in one scan: an event without usage passes as it is, and the
// `,"usage":null` of a chunk is cut out. Anything else is parsed.
func (t *streamTap) rewrite(raw []byte) {
	if t.answerID == "" && !t.responses {
		for ev := range sse.Events(raw) {
			t.answerID = stringMember(ev.Data, "id")
		}
	}
	i := bytes.Index(raw, usageMember)
	if i < 0 {
		if !bytes.Contains(raw, doneData) {
			t.events++
		}
		t.out = append(t.out, raw...)
		return
	}
	rest := raw[i+len(usageMember):]
	if i > 0 && raw[i-1] == ',' && bytes.HasPrefix(rest, nullValue) && !bytes.Contains(rest, usageMember) {
		t.events++
		t.out = append(t.out, raw[:i-1]...)
		t.out = append(t.out, rest[len(nullValue):]...)
		return
	}
	for ev := range sse.Events(raw) {
		t.observe(ev.Name, ev.Data)
		if t.usageOnly(ev.Data) {
			return // the usage-only chunk the client did not ask for
		}
		t.out = sse.AppendEvent(t.out, ev.Name, removeMember(nil, ev.Data, "usage"))
		return
	}
	t.out = append(t.out, raw...)
}

// usageOnly reports whether a chat chunk is the final one that only carries
// usage (no choices).
func (t *streamTap) usageOnly(data []byte) bool {
	if t.responses || bytes.Contains(data, []byte(`"usage":null`)) {
		return false
	}
	raw, ok := member(data, "usage")
	if !ok || bytes.Equal(raw, []byte("null")) {
		return false
	}
	choices, _ := member(data, "choices")
	return isEmptyArray(choices)
}

// observe counts an event and reads the usage it carries, if any.
func (t *streamTap) observe(name string, data []byte) {
	if bytes.Equal(data, doneData) {
		return
	}
	t.events++
	if t.responses {
		if t.answerID == "" && (name == "response.created" || bytes.Contains(data, []byte(`"type":"response.created"`))) {
			if resp, ok := member(data, "response"); ok {
				if raw, ok := member(resp, "id"); ok {
					var id string
					if json.Unmarshal(raw, &id) == nil {
						t.answerID = id
					}
				}
			}
		}
		if name == "response.completed" || name == "response.incomplete" || name == "response.failed" ||
			(name == "" && bytes.Contains(data, []byte(`"type":"response.`)) && bytes.Contains(data, []byte(`"usage":{`))) {
			if resp, ok := member(data, "response"); ok {
				if u, ok := usageOf(resp); ok {
					t.u, t.have = u, true
				}
			}
		}
		return
	}
	if t.answerID == "" {
		t.answerID = stringMember(data, "id")
	}
	// Most chunks carry no usage, or "usage":null: only a chunk with a
	// usage object is read.
	i := bytes.Index(data, []byte(`"usage"`))
	if i < 0 {
		return
	}
	rest := bytes.TrimLeft(data[i+len(`"usage"`):], " \t\r\n:")
	if len(rest) == 0 || rest[0] != '{' {
		return
	}
	if u, ok := usageOf(data); ok {
		t.u, t.have = u, true
	}
}

func isEmptyArray(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) >= 2 && raw[0] == '[' && raw[len(raw)-1] == ']' && len(bytes.TrimSpace(raw[1:len(raw)-1])) == 0
}

// usage returns what the stream reported, and false if it ended before
// reporting (an aborted stream): the caller then counts what was seen.
func (t *streamTap) usage() (usage, bool) { return t.u, t.have }
