package openairelay

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// A chat stream as OpenAI sends it with stream_options.include_usage.
const usageStream = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

data: [DONE]

`

// The same stream as OpenAI sends it without include_usage.
const plainStream = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: [DONE]

`

func TestStreamTapStripsInjectedUsage(t *testing.T) {
	for _, size := range []int{1, 7, 64, len(usageStream)} {
		tap := newStreamTap("chat/completions", true)
		var out strings.Builder
		for i := 0; i < len(usageStream); i += size {
			out.Write(tap.feed([]byte(usageStream[i:min(i+size, len(usageStream))])))
		}
		out.Write(tap.close())
		if out.String() != plainStream {
			t.Fatalf("pieces of %d: got\n%s\nwant\n%s", size, out.String(), plainStream)
		}
		u, ok := tap.usage()
		if !ok || u.prompt != 9 || u.completion != 2 || u.total != 11 {
			t.Errorf("usage %+v %v", u, ok)
		}
	}
}

func TestStreamTapPassesThrough(t *testing.T) {
	tap := newStreamTap("chat/completions", false)
	var out strings.Builder
	out.Write(tap.feed([]byte(usageStream[:100])))
	out.Write(tap.feed([]byte(usageStream[100:])))
	out.Write(tap.close())
	if out.String() != usageStream {
		t.Fatalf("a client that asked for usage got a changed stream")
	}
	if u, ok := tap.usage(); !ok || u.total != 11 {
		t.Errorf("usage %+v %v", u, ok)
	}
}

func TestStreamTapResponses(t *testing.T) {
	stream := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"usage\":null}}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1,\"total_tokens\":6}}}\n\n"
	tap := newStreamTap("responses", false)
	tap.feed([]byte(stream))
	if u, ok := tap.usage(); !ok || u.prompt != 5 || u.completion != 1 || u.total != 6 {
		t.Errorf("usage %+v %v", u, ok)
	}
}

func TestAbortedStreamCountsEvents(t *testing.T) {
	tap := newStreamTap("chat/completions", true)
	tap.feed([]byte(usageStream[:strings.Index(usageStream, `"finish_reason":"stop"`)]))
	if _, ok := tap.usage(); ok {
		t.Fatal("usage from a stream cut before it")
	}
	if tap.events != 2 {
		t.Errorf("counted %d events; want 2", tap.events)
	}
}

func TestUsageOf(t *testing.T) {
	tests := []struct {
		body string
		want usage
		ok   bool
	}{
		{`{"id":"x","choices":[{"message":{"content":"{\"usage\":1}"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, usage{3, 4, 7, 0, 0, 0}, true},
		{`{"object":"response","usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15}}`, usage{10, 5, 15, 0, 0, 0}, true},
		{`{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`, usage{8, 0, 8, 0, 0, 0}, true},
		{`{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`, usage{2006, 300, 2306, 1920, 0, 0}, true},
		{`{"object":"response","usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":64},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":105}}`, usage{100, 5, 105, 64, 0, 0}, true},
		{`{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":99},"total_tokens":10}}`, usage{10, 0, 10, 10, 0, 0}, true},
		{`{"type":"realtime.response","usage":{"total_tokens":60,"input_tokens":40,"output_tokens":20,"input_token_details":{"cached_tokens":8,"text_tokens":10,"audio_tokens":30},"output_token_details":{"text_tokens":5,"audio_tokens":15}}}`, usage{40, 20, 60, 8, 30, 15}, true},
		{`{"object":"list","data":[]}`, usage{}, false},
		{`{"usage":null}`, usage{}, false},
		{`not json`, usage{}, false},
	}
	for _, tt := range tests {
		got, ok := usageOf([]byte(tt.body))
		if got != tt.want || ok != tt.ok {
			t.Errorf("usageOf(%s) = %+v, %v; want %+v, %v", tt.body, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRemoveMember(t *testing.T) {
	tests := []struct{ in, name, want string }{
		{`{"a":1,"usage":null}`, "usage", `{"a":1}`},
		{`{"usage":null,"a":1}`, "usage", `{"a":1}`},
		{`{"usage":null}`, "usage", `{}`},
		{`{"a":1, "usage" : null , "b":2}`, "usage", `{"a":1 , "b":2}`},
		{`{"a":{"usage":null}}`, "usage", `{"a":{"usage":null}}`},
	}
	for _, tt := range tests {
		if got := string(removeMember(nil, []byte(tt.in), tt.name)); got != tt.want {
			t.Errorf("removeMember(%s) = %s; want %s", tt.in, got, tt.want)
		}
	}
}

func TestCountChars(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}`)
	// String values: gpt-4o (6) user (4) abcdefgh (8) user (4) image_url (9) = 31 chars -> 8 tokens, plus one inline file.
	if got, want := countChars(body), int64(8+dataURLTokens); got != want {
		t.Errorf("countChars = %d; want %d", got, want)
	}
}

func TestCountTokensTokenizer(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"Hello, world! This is a test of the tokenizer."}]}`)
	n, ok := countTokens("gpt-4o", body)
	if !ok || n < 10 || n > 30 {
		t.Errorf("countTokens = %d, %v", n, ok)
	}
}

func TestCostPricesCachedInput(t *testing.T) {
	half := 1.25
	rl := &Relay{Prices: []Price{{Model: "gpt-4o*", Input: 2.5, Output: 10, CachedInput: &half}, {Model: "*", Input: 1, Output: 2}}}
	tests := []struct {
		model string
		u     usage
		want  float64
	}{
		{"gpt-4o", usage{prompt: 1_000_000, completion: 0}, 2.5},
		{"gpt-4o", usage{prompt: 1_000_000, cached: 1_000_000}, 1.25},
		{"gpt-4o", usage{prompt: 2_000_000, cached: 1_000_000, completion: 1_000_000}, 2.5 + 1.25 + 10},
		// Without a cached price, cached tokens cost the input price.
		{"other", usage{prompt: 1_000_000, cached: 500_000, completion: 1_000_000}, 1 + 2},
	}
	for _, tt := range tests {
		got, ok := rl.price(tt.model, tt.u)
		if !ok || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("cost(%s, %+v) = %v, %v; want %v", tt.model, tt.u, got, ok, tt.want)
		}
	}
}

// TestStreamTapStripsWithAnyLineEnd checks that usage the client did not
// ask for is taken out of a stream whatever its line terminators.
func TestStreamTapStripsWithAnyLineEnd(t *testing.T) {
	for _, nl := range []string{"\n", "\r\n", "\r"} {
		stream := strings.ReplaceAll(usageStream, "\n", nl)
		tap := newStreamTap("chat/completions", true)
		var out []byte
		for i := 0; i < len(stream); i += 7 {
			out = append(out, tap.feed([]byte(stream[i:min(i+7, len(stream))]))...)
		}
		out = append(out, tap.close()...)
		if bytes.Contains(out, []byte(`"usage"`)) {
			t.Errorf("line end %q: usage left in %q", nl, out)
		}
		if !bytes.Contains(out, []byte("[DONE]")) || !bytes.Contains(out, []byte(`"finish_reason":"stop"`)) {
			t.Errorf("line end %q: events lost: %q", nl, out)
		}
		if u, ok := tap.usage(); !ok || u.total == 0 {
			t.Errorf("line end %q: usage %+v %v", nl, u, ok)
		}
	}
}

// TestStreamTapKeepsTheAnswerID checks that a chat stream's completion id
// is read (a stored completion's, when the request set store), whether or
// not the tap rewrites the stream.
func TestStreamTapKeepsTheAnswerID(t *testing.T) {
	for _, strip := range []bool{false, true} {
		tap := newStreamTap("chat/completions", strip)
		tap.feed([]byte(usageStream))
		tap.close()
		if tap.answerID != "c1" {
			t.Errorf("strip %v: answer id %q; want c1", strip, tap.answerID)
		}
	}
}
