package openairelay

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/caddyrelay/openairelay/internal/cache"
)

// usage is what an answer reports it used.
type usage struct {
	prompt, completion, total int64
}

// usageFields covers the shapes of usage in chat completions, completions
// and embeddings (prompt/completion) and in the Responses API (input/output).
type usageFields struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (f usageFields) usage() usage {
	u := usage{prompt: f.PromptTokens + f.InputTokens, completion: f.CompletionTokens + f.OutputTokens, total: f.TotalTokens}
	if u.total == 0 {
		u.total = u.prompt + u.completion
	}
	return u
}

// usageOf finds the top-level usage object of a JSON answer without decoding
// the rest of it.
func usageOf(body []byte) (usage, bool) {
	raw, ok := member(body, "usage")
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return usage{}, false
	}
	var f usageFields
	if json.Unmarshal(raw, &f) != nil {
		return usage{}, false
	}
	return f.usage(), true
}

// member returns the raw value of a top-level member of a JSON object.
func member(data []byte, name string) ([]byte, bool) {
	var raw []byte
	eachMember(data, func(key string, start, end int) {
		if key == name && raw == nil {
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
type streamTap struct {
	responses bool // a Responses API stream: usage arrives in response.completed
	strip     bool

	parser cache.Parser
	out    []byte
	u      usage
	have   bool
	events int
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
	t.parser.Feed(p)
	t.out = t.out[:0]
	for {
		ev, ok := t.parser.Next()
		if !ok {
			break
		}
		t.observe(ev)
	}
	if !t.strip {
		return p
	}
	return t.out
}

// close ends the stream and returns what is left to send.
func (t *streamTap) close() []byte {
	if !t.strip {
		return nil
	}
	t.parser.Close()
	t.out = t.out[:0]
	for {
		ev, ok := t.parser.Next()
		if !ok {
			return t.out
		}
		t.observe(ev)
	}
}

func (t *streamTap) observe(ev cache.Event) {
	if bytes.Equal(ev.Data, []byte("[DONE]")) {
		if t.strip {
			t.out = cache.AppendEvent(t.out, ev.Name, ev.Data)
		}
		return
	}
	t.events++
	if t.responses {
		if strings.HasPrefix(ev.Name, "response.") || bytes.Contains(ev.Data, []byte(`"response.`)) {
			if resp, ok := member(ev.Data, "response"); ok {
				if u, ok := usageOf(resp); ok {
					t.u, t.have = u, true
				}
			}
		}
		return
	}
	raw, hasUsage := member(ev.Data, "usage")
	if hasUsage && !bytes.Equal(raw, []byte("null")) {
		if u, ok := usageOf(ev.Data); ok {
			t.u, t.have = u, true
		}
		if t.strip {
			if choices, _ := member(ev.Data, "choices"); isEmptyArray(choices) {
				return // the usage-only chunk the client did not ask for
			}
		}
	}
	if t.strip {
		t.out = cache.AppendEvent(t.out, ev.Name, removeMember(nil, ev.Data, "usage"))
	}
}

func isEmptyArray(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) >= 2 && raw[0] == '[' && raw[len(raw)-1] == ']' && len(bytes.TrimSpace(raw[1:len(raw)-1])) == 0
}

// usage returns what the stream reported, and false if it ended before
// reporting (an aborted stream): the caller then counts what was seen.
func (t *streamTap) usage() (usage, bool) { return t.u, t.have }
