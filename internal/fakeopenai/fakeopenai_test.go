package fakeopenai

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- mirrors of the OpenAI objects, written from the API reference ----

type oaError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

type oaUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type oaToolCall struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type oaChatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role      string       `json:"role"`
			Content   *string      `json:"content"`
			ToolCalls []oaToolCall `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage oaUsage `json:"usage"`
}

type oaChatChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      string       `json:"role"`
			Content   *string      `json:"content"`
			ToolCalls []oaToolCall `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaUsage `json:"usage"`
}

type oaTextCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text         string  `json:"text"`
		Index        int     `json:"index"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaUsage `json:"usage"`
}

type oaRespUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

type oaOutputItem struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Status  string `json:"status"`
	Role    string `json:"role"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type oaResponse struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	CreatedAt         int64          `json:"created_at"`
	Status            string         `json:"status"`
	Model             string         `json:"model"`
	Output            []oaOutputItem `json:"output"`
	Usage             *oaRespUsage   `json:"usage"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
}

type oaRespEvent struct {
	Type           string        `json:"type"`
	SequenceNumber int           `json:"sequence_number"`
	Response       *oaResponse   `json:"response"`
	OutputIndex    *int          `json:"output_index"`
	ContentIndex   *int          `json:"content_index"`
	ItemID         string        `json:"item_id"`
	Item           *oaOutputItem `json:"item"`
	Delta          string        `json:"delta"`
	Text           string        `json:"text"`
	Arguments      string        `json:"arguments"`
}

type oaEmbeddings struct {
	Object string `json:"object"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Model string `json:"model"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

type oaModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// ---- helpers ----

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const testKey = "sk-test-abcdefghijklmnopwxyz"

func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s := New(opts)
	t.Cleanup(s.Close)
	s.AddKey(testKey, KeyLimits{})
	return s
}

func request(t *testing.T, s *Server, method, path, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return requestWith(t, http.DefaultClient, s, method, path, key, body, hdr...)
}

// requestWith sends a request with client and reads the whole answer;
// hdr are header name, value pairs.
func requestWith(t *testing.T, client *http.Client, s *Server, method, path, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, b, err)
	}
	return v
}

type sseEvent struct {
	event string
	data  string
}

// parseSSE splits an SSE body into events, checking the framing.
func parseSSE(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	if !bytes.HasSuffix(body, []byte("\n\n")) {
		t.Fatalf("stream does not end with a blank line: %q", body)
	}
	for _, block := range strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n") {
		var ev sseEvent
		for _, line := range strings.Split(block, "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		out = append(out, ev)
	}
	return out
}

// ---- endpoint shapes ----

func TestChatCompletion(t *testing.T) {
	s := newServer(t, Options{})
	s.AddKey("sk-lim-0000000000001", KeyLimits{RPM: 600, TPM: 60000})
	body := `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello there world"}]}]}`
	resp, b := request(t, s, "POST", "/chat/completions", "sk-lim-0000000000001", body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	cc := decode[oaChatCompletion](t, b)
	if !strings.HasPrefix(cc.ID, "chatcmpl-") || cc.Object != "chat.completion" || cc.Model != "gpt-4o-mini" || cc.Created == 0 {
		t.Errorf("bad envelope: %+v", cc)
	}
	if len(cc.Choices) != 1 || cc.Choices[0].Message.Role != "assistant" || cc.Choices[0].Message.Content == nil ||
		*cc.Choices[0].Message.Content != "echo: hello there world" || cc.Choices[0].FinishReason != "stop" {
		t.Errorf("bad choice: %s", b)
	}
	// "be brief" + "hello there world" = 8 + 17 = 25 runes -> 7 tokens; reply 4 words.
	if cc.Usage != (oaUsage{7, 4, 11}) {
		t.Errorf("usage %+v", cc.Usage)
	}
	for _, h := range []string{"x-request-id", "openai-processing-ms", "openai-organization", "openai-version",
		"x-ratelimit-limit-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-requests",
		"x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("missing header %s", h)
		}
	}
	if got := resp.Header.Get("openai-organization"); got != "org-fake" {
		t.Errorf("organization %q", got)
	}
	if got := resp.Header.Get("x-ratelimit-limit-requests"); got != "600" {
		t.Errorf("limit-requests %q", got)
	}
	// The minute's allowance: 600 - 1 requests, 60000 - 7 tokens.
	if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != "599" {
		t.Errorf("remaining-requests %q", got)
	}
	if got := resp.Header.Get("x-ratelimit-remaining-tokens"); got != "59993" {
		t.Errorf("remaining-tokens %q", got)
	}
	// Same request again: same answer, new id.
	_, b2 := request(t, s, "POST", "/chat/completions", "sk-lim-0000000000001", body)
	cc2 := decode[oaChatCompletion](t, b2)
	if cc2.ID == cc.ID || *cc2.Choices[0].Message.Content != *cc.Choices[0].Message.Content {
		t.Errorf("ids %s %s must differ, contents must not", cc.ID, cc2.ID)
	}
	// No limits: no x-ratelimit headers.
	resp, _ = request(t, s, "POST", "/chat/completions", testKey, body)
	if resp.Header.Get("x-ratelimit-limit-requests") != "" {
		t.Errorf("x-ratelimit headers for an unlimited key")
	}
}

func TestChatTruncation(t *testing.T) {
	s := newServer(t, Options{})
	for _, field := range []string{"max_tokens", "max_completion_tokens"} {
		_, b := request(t, s, "POST", "/chat/completions", testKey,
			`{"model":"gpt-4o","`+field+`":3,"messages":[{"role":"user","content":"one two three four"}]}`)
		cc := decode[oaChatCompletion](t, b)
		if *cc.Choices[0].Message.Content != "echo: one two" || cc.Choices[0].FinishReason != "length" || cc.Usage.CompletionTokens != 3 {
			t.Errorf("%s: %s", field, b)
		}
	}
}

func TestChatStream(t *testing.T) {
	for _, tc := range []struct {
		name         string
		includeUsage bool
		chunks       int
	}{
		{"plain", false, 5},
		{"include_usage", true, 5},
		{"one chunk", true, 1},
		{"more chunks than runes", false, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{StreamChunks: tc.chunks})
			body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"tell me a story"}]`
			if tc.includeUsage {
				body += `,"stream_options":{"include_usage":true}`
			}
			resp, b := request(t, s, "POST", "/chat/completions", testKey, body+"}")
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			evs := parseSSE(t, b)
			want := 1 + tc.chunks + 1
			if tc.includeUsage {
				want++
			}
			if len(evs) != want {
				t.Fatalf("%d events, want %d: %s", len(evs), want, b)
			}
			if evs[len(evs)-1].data != "[DONE]" {
				t.Fatalf("last event %q", evs[len(evs)-1].data)
			}
			var text strings.Builder
			var id string
			for i, ev := range evs[:len(evs)-1] {
				if ev.event != "" {
					t.Errorf("chat chunks have no event: line")
				}
				if tc.includeUsage != strings.Contains(ev.data, `"usage":`) {
					t.Errorf("chunk %d usage presence wrong: %s", i, ev.data)
				}
				ch := decode[oaChatChunk](t, []byte(ev.data))
				if ch.Object != "chat.completion.chunk" || ch.Model != "gpt-4o-mini" {
					t.Errorf("chunk %d envelope %s", i, ev.data)
				}
				if id == "" {
					id = ch.ID
				} else if ch.ID != id {
					t.Errorf("chunk ids differ")
				}
				switch {
				case i == 0:
					if ch.Choices[0].Delta.Role != "assistant" || ch.Choices[0].FinishReason != nil {
						t.Errorf("first chunk %s", ev.data)
					}
				case i <= tc.chunks:
					text.WriteString(*ch.Choices[0].Delta.Content)
					last := i == tc.chunks
					if (ch.Choices[0].FinishReason != nil) != last || (last && *ch.Choices[0].FinishReason != "stop") {
						t.Errorf("chunk %d finish_reason: %s", i, ev.data)
					}
					if tc.includeUsage && ch.Usage != nil {
						t.Errorf("content chunk with usage")
					}
				default:
					if len(ch.Choices) != 0 || ch.Usage == nil || *ch.Usage != (oaUsage{4, 5, 9}) {
						t.Errorf("usage chunk %s", ev.data)
					}
					if !strings.Contains(ev.data, `"choices":[]`) {
						t.Errorf("usage chunk choices not []: %s", ev.data)
					}
				}
			}
			if text.String() != "echo: tell me a story" {
				t.Errorf("content %q", text.String())
			}
		})
	}
}

func TestToolCalls(t *testing.T) {
	s := newServer(t, Options{})
	tools := `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	for _, choice := range []string{`"required"`, `{"type":"function","function":{"name":"get_weather"}}`} {
		_, b := request(t, s, "POST", "/chat/completions", testKey,
			`{"model":"gpt-4o","messages":[{"role":"user","content":"weather?"}],`+tools+`,"tool_choice":`+choice+`}`)
		cc := decode[oaChatCompletion](t, b)
		m := cc.Choices[0].Message
		if cc.Choices[0].FinishReason != "tool_calls" || m.Content != nil || len(m.ToolCalls) != 1 ||
			m.ToolCalls[0].Type != "function" || m.ToolCalls[0].Function.Name != "get_weather" ||
			m.ToolCalls[0].Function.Arguments != "{}" || !strings.HasPrefix(m.ToolCalls[0].ID, "call_") {
			t.Errorf("tool choice %s: %s", choice, b)
		}
	}
	// auto: a normal answer.
	_, b := request(t, s, "POST", "/chat/completions", testKey,
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],`+tools+`,"tool_choice":"auto"}`)
	if cc := decode[oaChatCompletion](t, b); cc.Choices[0].FinishReason != "stop" {
		t.Errorf("auto: %s", b)
	}
	// Stream.
	_, b = request(t, s, "POST", "/chat/completions", testKey,
		`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"weather?"}],`+tools+`,"tool_choice":"required"}`)
	evs := parseSSE(t, b)
	var name, args, finish string
	for _, ev := range evs[:len(evs)-1] {
		ch := decode[oaChatChunk](t, []byte(ev.data))
		for _, tc := range ch.Choices[0].Delta.ToolCalls {
			if tc.Index == nil || *tc.Index != 0 {
				t.Errorf("tool call delta without index: %s", ev.data)
			}
			name += tc.Function.Name
			args += tc.Function.Arguments
		}
		if f := ch.Choices[0].FinishReason; f != nil {
			finish = *f
		}
	}
	if name != "get_weather" || args != "{}" || finish != "tool_calls" || evs[len(evs)-1].data != "[DONE]" {
		t.Errorf("stream tool call: name %q args %q finish %q", name, args, finish)
	}
}

func TestCompletions(t *testing.T) {
	s := newServer(t, Options{StreamChunks: 3})
	_, b := request(t, s, "POST", "/completions", testKey, `{"model":"gpt-4o-mini","prompt":"say this","max_tokens":16}`)
	c := decode[oaTextCompletion](t, b)
	if !strings.HasPrefix(c.ID, "cmpl-") || c.Object != "text_completion" || c.Choices[0].Text != "echo: say this" ||
		*c.Choices[0].FinishReason != "stop" || c.Usage == nil || *c.Usage != (oaUsage{2, 3, 5}) {
		t.Errorf("completion: %s", b)
	}
	_, b = request(t, s, "POST", "/completions", testKey,
		`{"model":"gpt-4o-mini","prompt":["say this"],"stream":true,"stream_options":{"include_usage":true}}`)
	evs := parseSSE(t, b)
	if len(evs) != 3+2 || evs[4].data != "[DONE]" {
		t.Fatalf("events: %s", b)
	}
	var text string
	for i, ev := range evs[:3] {
		c := decode[oaTextCompletion](t, []byte(ev.data))
		text += c.Choices[0].Text
		if (c.Choices[0].FinishReason != nil) != (i == 2) {
			t.Errorf("finish_reason on chunk %d", i)
		}
	}
	if u := decode[oaTextCompletion](t, []byte(evs[3].data)); u.Usage == nil || u.Usage.TotalTokens != 5 || len(u.Choices) != 0 {
		t.Errorf("usage chunk %s", evs[3].data)
	}
	if text != "echo: say this" {
		t.Errorf("text %q", text)
	}
}

func TestResponses(t *testing.T) {
	s := newServer(t, Options{StreamChunks: 3})
	body := `{"model":"gpt-4.1","instructions":"be nice","input":[{"role":"user","content":[{"type":"input_text","text":"what is up"}]}]}`
	_, b := request(t, s, "POST", "/responses", testKey, body)
	r := decode[oaResponse](t, b)
	if !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" || r.Status != "completed" || r.Model != "gpt-4.1" || r.CreatedAt == 0 {
		t.Errorf("envelope: %s", b)
	}
	if len(r.Output) != 1 || r.Output[0].Type != "message" || r.Output[0].Role != "assistant" ||
		len(r.Output[0].Content) != 1 || r.Output[0].Content[0].Type != "output_text" || r.Output[0].Content[0].Text != "echo: what is up" {
		t.Errorf("output: %s", b)
	}
	// "be nice" 7 + "what is up" 10 = 17 runes -> 5 tokens.
	if r.Usage == nil || *r.Usage != (oaRespUsage{5, 4, 9}) {
		t.Errorf("usage %+v", r.Usage)
	}

	// Streaming: the real event sequence.
	_, b = request(t, s, "POST", "/responses", testKey, `{"model":"gpt-4.1","stream":true,"input":"what is up"}`)
	evs := parseSSE(t, b)
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %s", len(evs), len(want), b)
	}
	var deltas string
	var itemID string
	for i, ev := range evs {
		e := decode[oaRespEvent](t, []byte(ev.data))
		if ev.event != want[i] || e.Type != want[i] || e.SequenceNumber != i {
			t.Errorf("event %d: event %q type %q seq %d, want %q", i, ev.event, e.Type, e.SequenceNumber, want[i])
		}
		switch e.Type {
		case "response.created", "response.in_progress":
			if e.Response == nil || e.Response.Status != "in_progress" || e.Response.Usage != nil {
				t.Errorf("%s: %s", e.Type, ev.data)
			}
		case "response.output_item.added":
			itemID = e.Item.ID
			if e.OutputIndex == nil || e.Item.Type != "message" || e.Item.Status != "in_progress" {
				t.Errorf("%s: %s", e.Type, ev.data)
			}
		case "response.output_text.delta":
			deltas += e.Delta
			if e.ItemID != itemID || e.ContentIndex == nil || e.OutputIndex == nil {
				t.Errorf("%s: %s", e.Type, ev.data)
			}
		case "response.output_text.done":
			if e.Text != "echo: what is up" {
				t.Errorf("%s: %s", e.Type, ev.data)
			}
		case "response.completed":
			if e.Response == nil || e.Response.Status != "completed" || e.Response.Usage == nil ||
				*e.Response.Usage != (oaRespUsage{3, 4, 7}) || e.Response.Output[0].Content[0].Text != "echo: what is up" {
				t.Errorf("%s: %s", e.Type, ev.data)
			}
		}
	}
	if deltas != "echo: what is up" {
		t.Errorf("deltas %q", deltas)
	}

	// max_output_tokens truncation: incomplete.
	_, b = request(t, s, "POST", "/responses", testKey, `{"model":"gpt-4.1","max_output_tokens":2,"input":"what is up"}`)
	r = decode[oaResponse](t, b)
	if r.Status != "incomplete" || r.IncompleteDetails == nil || r.IncompleteDetails.Reason != "max_output_tokens" || r.Output[0].Content[0].Text != "echo: what" {
		t.Errorf("incomplete: %s", b)
	}

	// Function call.
	_, b = request(t, s, "POST", "/responses", testKey,
		`{"model":"gpt-4.1","stream":true,"input":"hi","tools":[{"type":"function","name":"lookup","parameters":{}}],"tool_choice":"required"}`)
	evs = parseSSE(t, b)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.event)
	}
	wantFC := "response.created response.in_progress response.output_item.added response.function_call_arguments.delta response.function_call_arguments.done response.output_item.done response.completed"
	if strings.Join(types, " ") != wantFC {
		t.Errorf("function call events %v", types)
	}
	last := decode[oaRespEvent](t, []byte(evs[len(evs)-1].data))
	if o := last.Response.Output[0]; o.Type != "function_call" || o.Name != "lookup" || o.Arguments != "{}" || !strings.HasPrefix(o.CallID, "call_") {
		t.Errorf("function call output %+v", o)
	}
}

func TestEmbeddings(t *testing.T) {
	s := newServer(t, Options{})
	_, b := request(t, s, "POST", "/embeddings", testKey, `{"model":"text-embedding-3-small","input":["The cat sat","the CAT sat!","dogs bark loudly"]}`)
	e := decode[oaEmbeddings](t, b)
	if e.Object != "list" || e.Model != "text-embedding-3-small" || len(e.Data) != 3 || e.Usage.PromptTokens != 10 || e.Usage.TotalTokens != 10 {
		t.Fatalf("envelope: %s", b)
	}
	vecs := make([][]float32, 3)
	for i, d := range e.Data {
		if d.Object != "embedding" || d.Index != i {
			t.Errorf("item %d: %+v", i, d)
		}
		if err := json.Unmarshal(d.Embedding, &vecs[i]); err != nil || len(vecs[i]) != 64 {
			t.Fatalf("vector %d: %v len %d", i, err, len(vecs[i]))
		}
	}
	dot := func(a, b []float32) (s float64) {
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	if d := dot(vecs[0], vecs[0]); math.Abs(d-1) > 1e-5 {
		t.Errorf("not normalised: %v", d)
	}
	if d := dot(vecs[0], vecs[1]); math.Abs(d-1) > 1e-5 {
		t.Errorf("same words should be identical: %v", d)
	}
	if d := dot(vecs[0], vecs[2]); d > 0.9 {
		t.Errorf("different words too similar: %v", d)
	}

	// base64 with dimensions: same numbers.
	_, b = request(t, s, "POST", "/embeddings", testKey, `{"model":"text-embedding-3-small","input":"The cat sat","encoding_format":"base64","dimensions":8}`)
	e = decode[oaEmbeddings](t, b)
	var s64 string
	if err := json.Unmarshal(e.Data[0].Embedding, &s64); err != nil {
		t.Fatalf("base64 embedding not a string: %s", b)
	}
	raw, err := base64.StdEncoding.DecodeString(s64)
	if err != nil || len(raw) != 8*4 {
		t.Fatalf("base64: %v %d", err, len(raw))
	}
	want := Embed("The cat sat", 8)
	for i := range want {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != want[i] {
			t.Errorf("dim %d: %v != %v", i, got, want[i])
		}
	}
}

func TestModels(t *testing.T) {
	s := newServer(t, Options{})
	_, b := request(t, s, "GET", "/models", testKey, "")
	list := decode[struct {
		Object string    `json:"object"`
		Data   []oaModel `json:"data"`
	}](t, b)
	if list.Object != "list" || len(list.Data) != len(DefaultModels) || list.Data[0].Object != "model" || list.Data[0].OwnedBy == "" {
		t.Errorf("list: %s", b)
	}
	resp, b := request(t, s, "GET", "/models/gpt-4o", testKey, "")
	if m := decode[oaModel](t, b); resp.StatusCode != 200 || m.ID != "gpt-4o" || m.Object != "model" {
		t.Errorf("retrieve: %s", b)
	}
	resp, b = request(t, s, "GET", "/models/nope", testKey, "")
	if e := decode[oaError](t, b); resp.StatusCode != 404 || *e.Error.Code != "model_not_found" {
		t.Errorf("unknown: %d %s", resp.StatusCode, b)
	}
}

func TestModerations(t *testing.T) {
	s := newServer(t, Options{})
	_, b := request(t, s, "POST", "/moderations", testKey, `{"input":["hello","I will kill it"]}`)
	var m struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Results []struct {
			Flagged        bool               `json:"flagged"`
			Categories     map[string]bool    `json:"categories"`
			CategoryScores map[string]float64 `json:"category_scores"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.ID, "modr-") || m.Model != "omni-moderation-latest" || len(m.Results) != 2 ||
		m.Results[0].Flagged || !m.Results[1].Flagged || !m.Results[1].Categories["violence"] || len(m.Results[0].CategoryScores) != 13 {
		t.Errorf("moderation: %s", b)
	}
}

func multipartBody(t *testing.T, fields map[string]string, file []byte) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	if file != nil {
		fw, _ := mw.CreateFormFile("file", "audio.mp3")
		_, _ = fw.Write(file)
	}
	_ = mw.Close()
	return mw.FormDataContentType(), &buf
}

func TestAudio(t *testing.T) {
	s := newServer(t, Options{})
	for _, tc := range []struct {
		name   string
		fields map[string]string
		file   []byte
		status int
		want   string
	}{
		{"json", map[string]string{"model": "whisper-1"}, make([]byte, 1234), 200, `{"text":"transcribed 1234 bytes"}`},
		{"text", map[string]string{"model": "whisper-1", "response_format": "text"}, make([]byte, 10), 200, "transcribed 10 bytes\n"},
		{"no file", map[string]string{"model": "whisper-1"}, nil, 400, "'file'"},
		{"no model", map[string]string{}, []byte("x"), 400, "model parameter"},
		{"unknown model", map[string]string{"model": "whisper-9"}, []byte("x"), 404, "model_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := multipartBody(t, tc.fields, tc.file)
			req, _ := http.NewRequest("POST", s.URL()+"/audio/transcriptions", body)
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
				t.Errorf("status %d body %s", resp.StatusCode, b)
			}
		})
	}
	recs := s.Records()
	if recs[0].Model != "whisper-1" || recs[0].Path != "/v1/audio/transcriptions" {
		t.Errorf("record %+v", recs[0])
	}
}

// ---- errors and auth ----

func TestErrors(t *testing.T) {
	s := newServer(t, Options{})
	s.AddKey("sk-invalid-0000000000abcd", KeyLimits{})
	s.SetKeyState("sk-invalid-0000000000abcd", KeyInvalid)
	s.SetKeyState("sk-noquota-000000000000", KeyNoQuota)
	s.SetKeyState("sk-forbidden-00000000000", KeyForbidden)
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	null := "<null>"
	for _, tc := range []struct {
		name, method, path, key, body string
		hdr                           []string
		status                        int
		typ, code, msg                string
	}{
		{"no key", "POST", "/chat/completions", "", chat, nil, 401, "invalid_request_error", null, "You didn't provide an API key."},
		{"unknown key", "POST", "/chat/completions", "sk-unknown-1234567wxyz", chat, nil, 401, "invalid_request_error", "invalid_api_key",
			"Incorrect API key provided: sk-un***wxyz. You can find your API key at https://platform.openai.com/account/api-keys."},
		{"invalid key", "POST", "/chat/completions", "sk-invalid-0000000000abcd", chat, nil, 401, "invalid_request_error", "invalid_api_key", "sk-in***abcd"},
		{"invalid key on models", "GET", "/models", "sk-invalid-0000000000abcd", "", nil, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key"},
		{"no quota", "POST", "/chat/completions", "sk-noquota-000000000000", chat, nil, 429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota"},
		{"forbidden", "POST", "/embeddings", "sk-forbidden-00000000000", `{"model":"text-embedding-3-small","input":"x"}`, nil, 403, "request_forbidden", "unsupported_country_region_territory", "not supported"},
		{"bad json", "POST", "/chat/completions", testKey, `{"model":`, nil, 400, "invalid_request_error", null, "We could not parse the JSON body"},
		{"wrong type", "POST", "/chat/completions", testKey, `{"model":"gpt-4o","stream":"yes","messages":[]}`, nil, 400, "invalid_request_error", "invalid_type", "stream"},
		{"missing model", "POST", "/chat/completions", testKey, `{"messages":[{"role":"user","content":"hi"}]}`, nil, 400, "invalid_request_error", null, "you must provide a model parameter"},
		{"unknown model", "POST", "/chat/completions", testKey, `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, nil, 404, "invalid_request_error", "model_not_found",
			"The model `gpt-9` does not exist or you do not have access to it."},
		{"missing messages", "POST", "/chat/completions", testKey, `{"model":"gpt-4o"}`, nil, 400, "invalid_request_error", "missing_required_parameter", "messages"},
		{"invalid url", "POST", "/xyz", testKey, `{}`, nil, 404, "invalid_request_error", null, "Invalid URL (POST /v1/xyz)"},
		{"wrong method", "GET", "/chat/completions", testKey, "", nil, 405, "invalid_request_error", null, "Invalid method for URL (GET /v1/chat/completions)"},
		{"api-key header", "POST", "/chat/completions", "", chat, []string{"api-key", testKey}, 200, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := request(t, s, tc.method, tc.path, tc.key, tc.body, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if resp.Header.Get("x-request-id") == "" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("headers %v", resp.Header)
			}
			if tc.status == 200 {
				return
			}
			var raw map[string]map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"message", "type", "param", "code"} {
				if _, ok := raw["error"][f]; !ok {
					t.Errorf("error.%s missing: %s", f, b)
				}
			}
			e := decode[oaError](t, b)
			code := null
			if e.Error.Code != nil {
				code = *e.Error.Code
			}
			if e.Error.Type != tc.typ || code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("error %s", b)
			}
			if strings.Contains(string(b), tc.key) && tc.key != "" && tc.key != testKey {
				t.Errorf("key leaked in %s", b)
			}
		})
	}
	// Azure style: Bearer is not enough.
	az := newServer(t, Options{RequireAPIKeyHeader: true})
	if resp, b := request(t, az, "POST", "/chat/completions", testKey, chat); resp.StatusCode != 401 {
		t.Errorf("bearer accepted in api-key mode: %s", b)
	}
	if resp, b := request(t, az, "POST", "/chat/completions", "", chat, "api-key", testKey); resp.StatusCode != 200 {
		t.Errorf("api-key refused: %s", b)
	}
	// Count includes every status for a known key.
	if n := s.Count("sk-invalid-0000000000abcd"); n != 2 {
		t.Errorf("count of invalid key %d", n)
	}
	if n := s.Served("sk-invalid-0000000000abcd"); n != 0 {
		t.Errorf("served of invalid key %d", n)
	}
}

func TestMaskKey(t *testing.T) {
	for in, want := range map[string]string{
		"sk-abcdefghijklmnopwxyz": "sk-ab***wxyz",
		"sk-abc1234":              "sk***34",
		"abc":                     "***",
	} {
		if got := MaskKey(in); got != want {
			t.Errorf("MaskKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// ---- rate limits ----

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                          "0s",
		time.Second:                "1s",
		6 * time.Minute:            "6m0s",
		20 * time.Millisecond:      "20ms",
		90500 * time.Millisecond:   "1m30.5s",
		1200*time.Millisecond + 1:  "1.201s",
		100 * time.Microsecond:     "1ms",
		8640 * time.Millisecond:    "8.64s",
		time.Hour + 2*time.Minute:  "1h2m0s",
		-5 * time.Millisecond:      "0s",
		999999 * time.Microsecond:  "1s",
		1500000 * time.Microsecond: "1.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRateLimitRPM(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now})
	const key = "sk-rpm-000000000000001"
	s.AddKey(key, KeyLimits{RPM: 600}) // 10/s, bucket of 10
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	for i := 0; i < 10; i++ {
		resp, b := request(t, s, "POST", "/chat/completions", key, chat)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		if got, want := resp.Header.Get("x-ratelimit-remaining-requests"), strconv.Itoa(599-i); got != want {
			t.Errorf("remaining %s, want %s", got, want)
		}
		if got, want := resp.Header.Get("x-ratelimit-reset-requests"), FormatDuration(time.Duration(i+1)*100*time.Millisecond); got != want {
			t.Errorf("reset %s, want %s", got, want)
		}
	}
	resp, b := request(t, s, "POST", "/chat/completions", key, chat)
	if resp.StatusCode != 429 {
		t.Fatalf("11th request: %d", resp.StatusCode)
	}
	e := decode[oaError](t, b)
	wantMsg := "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min (RPM): Limit 600, Used 10, Requested 1. Please try again in 100ms. Visit https://platform.openai.com/account/rate-limits to learn more."
	if e.Error.Message != wantMsg || e.Error.Type != "requests" || *e.Error.Code != "rate_limit_exceeded" || e.Error.Param != nil {
		t.Errorf("429 body %s", b)
	}
	for h, want := range map[string]string{
		"retry-after": "1", "retry-after-ms": "100",
		"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590", "x-ratelimit-reset-requests": "1s",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if s.RateLimited() != 1 || s.Served(key) != 10 || s.Count(key) != 11 {
		t.Errorf("counters: limited %d served %d count %d", s.RateLimited(), s.Served(key), s.Count(key))
	}
	// A rejected request costs nothing; 100ms later one more is admitted, and only one.
	clk.Add(100 * time.Millisecond)
	if resp, _ := request(t, s, "POST", "/chat/completions", key, chat); resp.StatusCode != 200 {
		t.Errorf("after 100ms: %d", resp.StatusCode)
	}
	if resp, _ := request(t, s, "POST", "/chat/completions", key, chat); resp.StatusCode != 429 {
		t.Errorf("second after 100ms: %d", resp.StatusCode)
	}
	// GET /models is not rate limited.
	if resp, _ := request(t, s, "GET", "/models", key, ""); resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-remaining-requests") != "590" {
		t.Errorf("models while limited: %d", resp.StatusCode)
	}
	// A full second refills the bucket, not more.
	clk.Add(5 * time.Second)
	n := 0
	for i := 0; i < 15; i++ {
		if resp, _ := request(t, s, "POST", "/chat/completions", key, chat); resp.StatusCode == 200 {
			n++
		}
	}
	if n != 10 {
		t.Errorf("admitted %d after refill, want 10", n)
	}
}

func TestRateLimitTPM(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now})
	const key = "sk-tpm-000000000000001"
	s.AddKey(key, KeyLimits{TPM: 6000, Burst: time.Second}) // 100/s, bucket of 100
	// 40 runes -> 10 prompt tokens + max_tokens 30 = 40 per request.
	chat := `{"model":"gpt-4o","max_tokens":30,"messages":[{"role":"user","content":"` + strings.Repeat("a", 40) + `"}]}`
	for i, want := range []int{200, 200, 429} {
		resp, b := request(t, s, "POST", "/chat/completions", key, chat)
		if resp.StatusCode != want {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		if want == 429 {
			e := decode[oaError](t, b)
			if e.Error.Type != "tokens" || !strings.Contains(e.Error.Message, "on tokens per min (TPM): Limit 6000, Used 80, Requested 40. Please try again in 200ms.") {
				t.Errorf("TPM 429: %s", b)
			}
			if resp.Header.Get("retry-after-ms") != "200" || resp.Header.Get("x-ratelimit-remaining-tokens") != "5920" || resp.Header.Get("x-ratelimit-reset-tokens") != "800ms" {
				t.Errorf("TPM 429 headers %v", resp.Header)
			}
			if resp.Header.Get("x-ratelimit-limit-requests") != "" {
				t.Errorf("requests headers without RPM")
			}
		}
	}
	// Larger than the burst but within the minute: admitted on a full bucket, leaving a debt.
	clk.Add(time.Second)
	big := `{"model":"gpt-4o","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`
	resp, b := request(t, s, "POST", "/chat/completions", key, big)
	// cost 301 on a full bucket of 100: deficit 301.
	if resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-remaining-tokens") != "5699" || resp.Header.Get("x-ratelimit-reset-tokens") != "3.01s" {
		t.Errorf("big request: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	clk.Add(time.Second)
	if resp, _ := request(t, s, "POST", "/chat/completions", key, chat); resp.StatusCode != 429 {
		t.Errorf("in debt: %d", resp.StatusCode)
	}
	// Larger than the minute: never.
	clk.Add(time.Minute)
	resp, b = request(t, s, "POST", "/chat/completions", key, `{"model":"gpt-4o","max_tokens":7000,"messages":[{"role":"user","content":"hi"}]}`)
	if e := decode[oaError](t, b); resp.StatusCode != 429 || !strings.HasPrefix(e.Error.Message, "Request too large for gpt-4o") || resp.Header.Get("retry-after") != "" {
		t.Errorf("too large: %d %s", resp.StatusCode, b)
	}
}

func TestRateLimitRealTime(t *testing.T) {
	s := newServer(t, Options{})
	const key = "sk-real-00000000000001"
	s.AddKey(key, KeyLimits{RPM: 600}) // 10/s, bucket of 10
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	codes := map[int]int{}
	start := time.Now()
	for i := 0; i < 15; i++ {
		resp, _ := request(t, s, "POST", "/chat/completions", key, chat)
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			ms, err := strconv.Atoi(resp.Header.Get("retry-after-ms"))
			if err != nil || ms <= 0 || ms > 100 || resp.Header.Get("retry-after") != "1" {
				t.Errorf("retry-after-ms %q", resp.Header.Get("retry-after-ms"))
			}
		}
	}
	// The bucket holds 10 and refills one every 100ms: on a loaded machine
	// the 15 requests take longer, and each 100ms they take lets one more
	// through.
	allowed := 11 + int(time.Since(start)/(100*time.Millisecond))
	if codes[200] < 10 || codes[200] > allowed || codes[429] < 15-allowed {
		t.Errorf("codes %v in %v; want 10 to %d answered", codes, time.Since(start), allowed)
	}
	time.Sleep(120 * time.Millisecond)
	if resp, _ := request(t, s, "POST", "/chat/completions", key, chat); resp.StatusCode != 200 {
		t.Errorf("after waiting: %d", resp.StatusCode)
	}
}

func TestRefundUnusedTokens(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now, RefundUnusedTokens: true})
	const key = "sk-refund-0000000000001"
	s.AddKey(key, KeyLimits{TPM: 6000})
	// cost 1 + 50, used 1 + 2: 48 back.
	resp, _ := request(t, s, "POST", "/chat/completions", key, `{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.Header.Get("x-ratelimit-remaining-tokens") != "5949" {
		t.Errorf("remaining at answer %q", resp.Header.Get("x-ratelimit-remaining-tokens"))
	}
	resp, _ = request(t, s, "GET", "/models", key, "")
	if resp.Header.Get("x-ratelimit-remaining-tokens") != "5997" {
		t.Errorf("remaining after refund %q", resp.Header.Get("x-ratelimit-remaining-tokens"))
	}
}

func TestRateLimitHeadersOff(t *testing.T) {
	off := false
	s := newServer(t, Options{RateLimitHeaders: &off})
	s.AddKey("sk-lim-0000000000001", KeyLimits{RPM: 60})
	resp, _ := request(t, s, "POST", "/chat/completions", "sk-lim-0000000000001", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-limit-requests") != "" {
		t.Errorf("headers sent: %v", resp.Header)
	}
}

// ---- faults ----

func TestFaults(t *testing.T) {
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	stream := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"one two three four five six"}]}`

	t.Run("status with count", func(t *testing.T) {
		s := newServer(t, Options{})
		s.AddFault(Fault{Status: 503, Count: 2})
		for i, want := range []int{503, 503, 200} {
			resp, b := request(t, s, "POST", "/chat/completions", testKey, chat)
			if resp.StatusCode != want {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
			if want == 503 {
				if e := decode[oaError](t, b); e.Error.Type != "server_error" {
					t.Errorf("503 body %s", b)
				}
			}
		}
		if s.Count(testKey) != 3 || s.Served(testKey) != 1 {
			t.Errorf("count %d served %d", s.Count(testKey), s.Served(testKey))
		}
	})

	t.Run("key and path filters, order", func(t *testing.T) {
		s := newServer(t, Options{})
		s.AddKey("sk-other-0000000000001", KeyLimits{})
		s.AddFault(Fault{Status: 500, Key: "sk-other-0000000000001"})
		s.AddFault(Fault{Status: 502, Path: "/embeddings", Count: 1})
		s.AddFault(Fault{Status: 504, Count: 1})
		if resp, _ := request(t, s, "POST", "/chat/completions", "sk-other-0000000000001", chat); resp.StatusCode != 500 {
			t.Errorf("key fault: %d", resp.StatusCode)
		}
		if resp, _ := request(t, s, "POST", "/embeddings", testKey, `{"model":"text-embedding-3-small","input":"x"}`); resp.StatusCode != 502 {
			t.Errorf("path fault: %d", resp.StatusCode)
		}
		if resp, _ := request(t, s, "POST", "/chat/completions", testKey, chat); resp.StatusCode != 504 {
			t.Errorf("any fault: %d", resp.StatusCode)
		}
		if resp, _ := request(t, s, "POST", "/chat/completions", testKey, chat); resp.StatusCode != 200 {
			t.Errorf("after faults: %d", resp.StatusCode)
		}
		if resp, _ := request(t, s, "POST", "/chat/completions", "sk-other-0000000000001", chat); resp.StatusCode != 500 {
			t.Errorf("permanent fault: %d", resp.StatusCode)
		}
		s.ClearFaults()
		if resp, _ := request(t, s, "POST", "/chat/completions", "sk-other-0000000000001", chat); resp.StatusCode != 200 {
			t.Errorf("after clear: %d", resp.StatusCode)
		}
	})

	t.Run("custom 429", func(t *testing.T) {
		s := newServer(t, Options{})
		s.AddFault(Fault{Status: 429, Count: 1, Header: http.Header{"Retry-After-Ms": {"250"}}})
		resp, b := request(t, s, "POST", "/chat/completions", testKey, chat)
		if e := decode[oaError](t, b); resp.StatusCode != 429 || *e.Error.Code != "rate_limit_exceeded" || resp.Header.Get("retry-after-ms") != "250" {
			t.Errorf("429 fault %d %v %s", resp.StatusCode, resp.Header, b)
		}
	})

	t.Run("reset", func(t *testing.T) {
		s := newServer(t, Options{})
		s.AddFault(Fault{Reset: true, Count: 1})
		req, _ := http.NewRequest("POST", s.URL()+"/chat/completions", strings.NewReader(chat))
		req.Header.Set("Authorization", "Bearer "+testKey)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("reset fault answered %d", resp.StatusCode)
		}
		if resp, _ := request(t, s, "POST", "/chat/completions", testKey, chat); resp.StatusCode != 200 {
			t.Errorf("after reset: %d", resp.StatusCode)
		}
		statuses := map[int]int{}
		for _, r := range s.Records() {
			statuses[r.Status]++
			if r.Key != testKey {
				t.Errorf("record key %q", r.Key)
			}
		}
		if statuses[0] != 1 || statuses[200] != 1 {
			t.Errorf("reset records %v", statuses)
		}
	})

	t.Run("latency", func(t *testing.T) {
		s := newServer(t, Options{})
		s.AddFault(Fault{Latency: 80 * time.Millisecond, Count: 1})
		start := time.Now()
		resp, _ := request(t, s, "POST", "/chat/completions", testKey, chat)
		if d := time.Since(start); resp.StatusCode != 200 || d < 80*time.Millisecond {
			t.Errorf("latency %v status %d", d, resp.StatusCode)
		}
		start = time.Now()
		request(t, s, "POST", "/chat/completions", testKey, chat)
		if d := time.Since(start); d > 60*time.Millisecond {
			t.Errorf("latency fault applied twice: %v", d)
		}
	})

	t.Run("drop mid-stream", func(t *testing.T) {
		s := newServer(t, Options{StreamChunks: 5})
		s.AddFault(Fault{DropAfter: 3, Count: 1})
		// A non-stream request does not consume a DropAfter fault.
		if resp, _ := request(t, s, "POST", "/chat/completions", testKey, chat); resp.StatusCode != 200 {
			t.Fatalf("non-stream: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest("POST", s.URL()+"/chat/completions", strings.NewReader(stream))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err == nil {
			t.Fatalf("stream not cut: %d %v", resp.StatusCode, err)
		}
		if n := strings.Count(string(b), "data: "); n != 3 || strings.Contains(string(b), "[DONE]") {
			t.Errorf("%d events before the drop: %q", n, b)
		}
		// The next stream is whole.
		_, b = request(t, s, "POST", "/chat/completions", testKey, stream)
		if !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Errorf("second stream %q", b)
		}
	})
}

func TestStreamTimingAndCancel(t *testing.T) {
	s := newServer(t, Options{StreamChunks: 3, ChunkDelay: 100 * time.Millisecond})
	req, _ := http.NewRequest("POST", s.URL()+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a b c d"}]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, `"role":"assistant"`) {
		t.Fatalf("first line %q %v", line, err)
	}
	if first := time.Since(start); first > 80*time.Millisecond {
		t.Errorf("first chunk took %v", first)
	}
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if total := time.Since(start); total < 300*time.Millisecond || !strings.HasSuffix(string(rest), "[DONE]\n\n") {
		t.Errorf("total %v, rest %q", total, rest)
	}

	// A client that goes away stops the stream.
	slow := newServer(t, Options{StreamChunks: 100, ChunkDelay: 20 * time.Millisecond})
	req, _ = http.NewRequest("POST", slow.URL()+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a b c d"}]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	deadline := time.Now().Add(time.Second)
	for len(slow.Records()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(slow.Records()) != 1 {
		t.Errorf("handler still running after the client left")
	}
}

// ---- records ----

func TestRecords(t *testing.T) {
	s := newServer(t, Options{})
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	request(t, s, "POST", "/chat/completions?x=1", testKey, body, "X-Custom", "v")
	request(t, s, "POST", "/chat/completions", "sk-nobody-00000000000", body)
	recs := s.Records()
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.Key != testKey || r.Method != "POST" || r.Path != "/v1/chat/completions" || r.Query != "x=1" || r.Model != "gpt-4o" ||
		!r.Stream || r.Header.Get("X-Custom") != "v" || string(r.Body) != body || r.Status != 200 || r.Time.IsZero() {
		t.Errorf("record %+v", r)
	}
	if recs[1].Key != "" || recs[1].Status != 401 {
		t.Errorf("unknown key record %+v", recs[1])
	}
	s.ResetRecords()
	if len(s.Records()) != 0 || s.Count(testKey) != 0 {
		t.Errorf("not reset")
	}
	s.SetRecording(false)
	request(t, s, "POST", "/chat/completions", testKey, body)
	if len(s.Records()) != 0 || s.Count(testKey) != 1 || s.Served(testKey) != 1 {
		t.Errorf("recording off: %d records, count %d", len(s.Records()), s.Count(testKey))
	}
}

func TestAllowAnyKeyConcurrent(t *testing.T) {
	s := New(Options{AllowAnyKey: true})
	defer s.Close()
	s.SetRecording(false)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "sk-any-" + strconv.Itoa(g%3)
			for i := 0; i < 25; i++ {
				body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
				if i%2 == 0 {
					body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
				}
				req, _ := http.NewRequest("POST", s.URL()+"/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	if total := s.Served("sk-any-0") + s.Served("sk-any-1") + s.Served("sk-any-2"); total != 200 {
		t.Errorf("served %d", total)
	}
}

func TestSplitAndEstimate(t *testing.T) {
	for _, tc := range []struct {
		s string
		n int
	}{{"hello world", 3}, {"héllo wörld ✓", 5}, {"ab", 5}, {"", 2}} {
		parts := split(tc.s, tc.n)
		if len(parts) != tc.n || strings.Join(parts, "") != tc.s {
			t.Errorf("split(%q,%d) = %q", tc.s, tc.n, parts)
		}
	}
	var c textCounter
	promptList(json.RawMessage(`[[1,2,3],"abcd"]`), &c)
	if got := c.promptTokens(); got != 4 {
		t.Errorf("tokens %d", got)
	}
}

// BenchmarkChat measures the handler alone (no network).
func BenchmarkChat(b *testing.B) {
	s := NewHandler(Options{AllowAnyKey: true})
	s.SetRecording(false)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there, how are you today?"}]}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer sk-bench")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}

func BenchmarkChatStream(b *testing.B) {
	s := NewHandler(Options{AllowAnyKey: true})
	s.SetRecording(false)
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there, how are you today?"}]}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer sk-bench")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}
