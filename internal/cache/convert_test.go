package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyrelay/openairelay/internal/sse"
)

// Fixtures in the shapes OpenAI sends.

const chatText = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Sure! Here is a short answer with \"quotes\", a backslash \\, a tab\t, emoji 😀 and accents: résumé, naïve, café.\nSecond line: the relay caches answers so that batch jobs, retries and many users asking the same thing do not cost an upstream call. It converts a stored non-stream answer into the chunks a stream request expects, and the reverse, so that either form can serve the other. </script> & <b>tags</b> stay as they are.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 97,
    "total_tokens": 116,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}`

const chatTools = `{
  "id": "chatcmpl-BcQ8ko2nz9B7CRvV0uVbcowidHpQU",
  "object": "chat.completion",
  "created": 1748496646,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {"id": "call_qOfTGgDrItLORNfC6VwUbyLL", "type": "function",
           "function": {"name": "get_weather", "arguments": "{\"location\":\"Shanghai\",\"unit\":\"celsius\"}"}},
          {"id": "call_Zx81", "type": "function",
           "function": {"name": "get_time", "arguments": "{\"tz\":\"Asia/Shanghai\"}"}}
        ],
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {"prompt_tokens": 91, "completion_tokens": 44, "total_tokens": 135},
  "service_tier": "default",
  "system_fingerprint": "fp_76544d79cb"
}`

const chatN2 = `{
  "id": "chatcmpl-n2",
  "object": "chat.completion",
  "created": 1741570000,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Paris.", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"},
    {"index": 1, "message": {"role": "assistant", "content": "The capital of France is", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "length"}
  ],
  "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
  "system_fingerprint": "fp_0ba0d124f1"
}`

const chatLogprobs = `{
  "id": "chatcmpl-lp",
  "object": "chat.completion",
  "created": 1741570001,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hi!", "refusal": null, "annotations": []},
      "logprobs": {
        "content": [
          {"token": "Hi", "logprob": -0.0001, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.0001, "bytes": [72, 105]}]},
          {"token": "!", "logprob": -1.2e-5, "bytes": [33], "top_logprobs": [{"token": "!", "logprob": -1.2e-5, "bytes": [33]}]}
        ],
        "refusal": null
      },
      "finish_reason": "stop"
    }
  ],
  "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
  "system_fingerprint": "fp_0ba0d124f1"
}`

const chatRefusal = `{
  "id": "chatcmpl-ref",
  "object": "chat.completion",
  "created": 1741570002,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {"index": 0, "message": {"role": "assistant", "content": null, "refusal": "I'm sorry, I can't help with that.", "annotations": []}, "logprobs": null, "finish_reason": "stop"}
  ],
  "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40},
  "system_fingerprint": "fp_1"
}`

// chatStream is a stream as OpenAI sends it with stream_options.include_usage, with
// an obfuscation member and a keep-alive comment; chatStreamAnswer is what it
// assembles to.
const chatStream = `data: {"id":"chatcmpl-S1","object":"chat.completion.chunk","created":1741571000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}

: keep-alive

data: {"id":"chatcmpl-S1","object":"chat.completion.chunk","created":1741571000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x2"}

data: {"id":"chatcmpl-S1","object":"chat.completion.chunk","created":1741571000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"lo, \u00e9\n"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x3"}

data: {"id":"chatcmpl-S1","object":"chat.completion.chunk","created":1741571000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-S1","object":"chat.completion.chunk","created":1741571000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":3,"total_tokens":11}}

data: [DONE]

`

const chatStreamAnswer = `{"id":"chatcmpl-S1","object":"chat.completion","created":1741571000,"model":"gpt-4o-mini-2024-07-18",
"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, é\n","refusal":null},"logprobs":null,"finish_reason":"stop"}],
"usage":{"prompt_tokens":8,"completion_tokens":3,"total_tokens":11},"service_tier":"default","system_fingerprint":"fp_1"}`

// chatToolStream streams two parallel tool calls, the arguments cut mid-token.
const chatToolStream = `data: {"id":"chatcmpl-T1","object":"chat.completion.chunk","created":1741572000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-T1","object":"chat.completion.chunk","created":1741572000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-T1","object":"chat.completion.chunk","created":1741572000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Paris\"}"}}]},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-T1","object":"chat.completion.chunk","created":1741572000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_B","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-T1","object":"chat.completion.chunk","created":1741572000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-T1","object":"chat.completion.chunk","created":1741572000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_2","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}

data: [DONE]

`

const chatToolStreamAnswer = `{"id":"chatcmpl-T1","object":"chat.completion","created":1741572000,"model":"gpt-4o-2024-08-06",
"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[
  {"id":"call_A","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris\"}"}},
  {"id":"call_B","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
 "logprobs":null,"finish_reason":"tool_calls"}],
"system_fingerprint":"fp_2"}`

// chatN2Stream interleaves two choices, as OpenAI does for n=2.
const chatN2Stream = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{"content":"B1 "},"logprobs":null,"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"A1 "},"logprobs":null,"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"A2"},"logprobs":null,"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{"content":"B2"},"logprobs":null,"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{},"logprobs":null,"finish_reason":"length"}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: [DONE]

`

const chatN2StreamAnswer = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[
{"index":0,"message":{"role":"assistant","content":"A1 A2","refusal":null},"logprobs":null,"finish_reason":"stop"},
{"index":1,"message":{"role":"assistant","content":"B1 B2","refusal":null},"logprobs":null,"finish_reason":"length"}]}`

const responseFull = `{
  "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
  "object": "response",
  "created_at": 1741476777,
  "status": "completed",
  "background": false,
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "o4-mini-2025-04-16",
  "output": [
    {
      "id": "rs_1",
      "type": "reasoning",
      "summary": [{"type": "summary_text", "text": "**Looking up the weather**\n\nThe user wants the weather; I should call the tool."}]
    },
    {
      "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
      "type": "message",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "The image depicts a scenic landscape with a wooden boardwalk or pathway leading through lush, green grass under a blue sky with some clouds. The setting suggests a peaceful natural area, possibly a park or nature reserve. There are trees and shrubs in the background. See https://example.com for more.",
          "annotations": [{"type": "url_citation", "start_index": 270, "end_index": 289, "url": "https://example.com", "title": "Example"}],
          "logprobs": []
        }
      ]
    },
    {
      "id": "fc_1",
      "type": "function_call",
      "status": "completed",
      "arguments": "{\"location\":\"Paris, France\"}",
      "call_id": "call_9",
      "name": "get_weather"
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {"effort": "medium", "summary": "auto"},
  "service_tier": "default",
  "store": true,
  "temperature": 1.0,
  "text": {"format": {"type": "text"}},
  "tool_choice": "auto",
  "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 328,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 52,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 380
  },
  "user": null,
  "metadata": {}
}`

const completionText = `{
  "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
  "object": "text_completion",
  "created": 1589478378,
  "model": "gpt-3.5-turbo-instruct",
  "system_fingerprint": "fp_44709d6fcb",
  "choices": [
    {"text": "\n\nThis is indeed a test", "index": 0, "logprobs": null, "finish_reason": "length"},
    {"text": "\n\nYes, it is", "index": 1, "logprobs": null, "finish_reason": "stop"}
  ],
  "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
}`

const completionStream = `data: {"id":"cmpl-7","object":"text_completion","created":1690759702,"choices":[{"text":"This","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}

data: {"id":"cmpl-7","object":"text_completion","created":1690759702,"choices":[{"text":" is a test","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}

data: {"id":"cmpl-7","object":"text_completion","created":1690759702,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct","usage":null}

data: {"id":"cmpl-7","object":"text_completion","created":1690759702,"choices":[],"model":"gpt-3.5-turbo-instruct","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}

data: [DONE]

`

const completionStreamAnswer = `{"id":"cmpl-7","object":"text_completion","created":1690759702,"model":"gpt-3.5-turbo-instruct",
"choices":[{"index":0,"text":"This is a test","logprobs":null,"finish_reason":"length"}],
"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`

// decodeJSON decodes b keeping numbers exact, for semantic comparison.
func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("invalid JSON %v: %s", err, b)
	}
	return v
}

// dropEmptyAnnotations removes the "annotations":[] OpenAI puts in non-stream
// messages; a stream has nothing to carry it.
func dropEmptyAnnotations(v any) any {
	m, _ := v.(map[string]any)
	cs, _ := m["choices"].([]any)
	for _, c := range cs {
		msg, _ := c.(map[string]any)["message"].(map[string]any)
		if a, ok := msg["annotations"].([]any); ok && len(a) == 0 {
			delete(msg, "annotations")
		}
	}
	return v
}

// wantBack is what a non-stream answer converted to a stream assembles back to: the
// same, less the usage when the stream did not include it.
func wantBack(t *testing.T, body string, usage bool) []byte {
	if usage {
		return []byte(body)
	}
	m := decodeJSON(t, []byte(body)).(map[string]any)
	delete(m, "usage")
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	g, w := dropEmptyAnnotations(decodeJSON(t, got)), dropEmptyAnnotations(decodeJSON(t, want))
	if !reflect.DeepEqual(g, w) {
		t.Errorf("JSON differs\n got: %s\nwant: %s", got, want)
	}
}

// dataEvents returns the data of every event of a stream, checking that each event is
// a single data line of valid JSON (or [DONE]).
func dataEvents(t *testing.T, stream []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for ev := range sse.Events(stream) {
		if bytes.Contains(ev.Data, []byte("\n")) {
			t.Errorf("multi-line data %q", ev.Data)
		}
		if string(ev.Data) == "[DONE]" {
			out = append(out, nil)
			continue
		}
		m, ok := decodeJSON(t, ev.Data).(map[string]any)
		if !ok {
			t.Fatalf("event is not an object: %s", ev.Data)
		}
		if typ, ok := m["type"].(string); ok && typ != ev.Name {
			t.Errorf("event name %q, type %q", ev.Name, typ)
		}
		out = append(out, m)
	}
	return out
}

func TestChatRoundTrip(t *testing.T) {
	for name, body := range map[string]string{
		"text": chatText, "tools": chatTools, "n=2": chatN2, "logprobs": chatLogprobs, "refusal": chatRefusal,
	} {
		for _, usage := range []bool{false, true} {
			sse, err := ChatToSSE([]byte(body), usage)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			checkChatChunks(t, name, []byte(body), sse, usage)
			back, err := SSEToChat(sse)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			sameJSON(t, back, wantBack(t, body, usage))
		}
	}
}

// checkChatChunks checks a converted stream the way a client sees it.
func checkChatChunks(t *testing.T, name string, body, sse []byte, usage bool) {
	t.Helper()
	orig := decodeJSON(t, body).(map[string]any)
	evs := dataEvents(t, sse)
	if len(evs) < 3 || evs[len(evs)-1] != nil {
		t.Fatalf("%s: stream does not end in [DONE]: %s", name, sse)
	}
	evs = evs[:len(evs)-1]
	for i, c := range evs {
		if c["object"] != "chat.completion.chunk" {
			t.Errorf("%s: chunk %d object %v", name, i, c["object"])
		}
		for _, k := range []string{"id", "created", "model", "system_fingerprint", "service_tier"} {
			if !reflect.DeepEqual(c[k], orig[k]) {
				t.Errorf("%s: chunk %d %s = %v, want %v", name, i, k, c[k], orig[k])
			}
		}
		u, has := c["usage"]
		last := i == len(evs)-1
		switch {
		case !usage && has:
			t.Errorf("%s: chunk %d has usage without include_usage", name, i)
		case usage && !last && (!has || u != nil):
			t.Errorf("%s: chunk %d usage %v, want null", name, i, u)
		case usage && last:
			if !reflect.DeepEqual(u, orig["usage"]) || len(c["choices"].([]any)) != 0 {
				t.Errorf("%s: final chunk %v", name, c)
			}
		}
	}
	first := evs[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	if first["role"] != "assistant" {
		t.Errorf("%s: first delta %v", name, first)
	}
}

func TestChatToSSEShape(t *testing.T) {
	sse, err := ChatToSSE([]byte(chatText), false)
	if err != nil {
		t.Fatal(err)
	}
	evs := dataEvents(t, sse)
	var deltas []string
	for _, c := range evs[:len(evs)-1] {
		d := c["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
		if s, ok := d["content"].(string); ok && s != "" {
			deltas = append(deltas, s)
		}
	}
	if len(deltas) < 2 {
		t.Errorf("long content sent in %d deltas", len(deltas))
	}
	for _, d := range deltas {
		if len(d) > deltaBytes {
			t.Errorf("delta of %d bytes", len(d))
		}
	}
	// HTML-significant characters are not escaped, as OpenAI does not.
	if !bytes.Contains(sse, []byte("</script> & <b>")) {
		t.Error("content re-escaped")
	}

	sse, err = ChatToSSE([]byte(chatTools), true)
	if err != nil {
		t.Fatal(err)
	}
	evs = dataEvents(t, sse)
	d := evs[1]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	tc := d["tool_calls"].([]any)[0].(map[string]any)
	fn := tc["function"].(map[string]any)
	if tc["index"] != json.Number("0") || tc["id"] != "call_qOfTGgDrItLORNfC6VwUbyLL" || tc["type"] != "function" ||
		fn["name"] != "get_weather" || fn["arguments"] != "" {
		t.Errorf("tool call opening chunk %v", d)
	}
	if c0 := evs[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any); c0["content"] != nil {
		t.Errorf("tool call answer's first delta has content %v", c0["content"])
	}
}

func TestSSEToChat(t *testing.T) {
	for name, tc := range map[string]struct{ sse, want string }{
		"content with usage": {chatStream, chatStreamAnswer},
		"tool calls":         {chatToolStream, chatToolStreamAnswer},
		"n=2 interleaved":    {chatN2Stream, chatN2StreamAnswer},
		"CRLF":               {strings.ReplaceAll(chatStream, "\n", "\r\n"), chatStreamAnswer},
	} {
		got, err := SSEToChat([]byte(tc.sse))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameJSON(t, got, []byte(tc.want))
		// And back: the assembled answer streams to the same assembled answer.
		sse, err := ChatToSSE(got, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := SSEToChat(sse)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameJSON(t, again, got)
	}
}

func TestSSEToChatUnknownFields(t *testing.T) {
	// Reasoning text as OpenAI-compatible servers stream it, and an unknown choice
	// member.
	sse := `data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Let me "},"finish_reason":null}]}

data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"reasoning_content":"think."},"finish_reason":null}]}

data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"42"},"finish_reason":null}]}

data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{},"finish_reason":"stop","content_filter_results":{"hate":{"filtered":false}}}]}

data: [DONE]
`
	got, err := SSEToChat([]byte(sse))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, []byte(`{"id":"x","object":"chat.completion","created":1,"model":"deepseek-reasoner","choices":[
		{"index":0,"message":{"role":"assistant","content":"42","refusal":null,"reasoning_content":"Let me think."},
		 "logprobs":null,"finish_reason":"stop","content_filter_results":{"hate":{"filtered":false}}}]}`))
	back, err := ChatToSSE(got, false)
	if err != nil {
		t.Fatal(err)
	}
	again, err := SSEToChat(back)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, again, got)
}

func TestCompletionConversion(t *testing.T) {
	got, err := SSEToCompletion([]byte(completionStream))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, []byte(completionStreamAnswer))

	for _, usage := range []bool{false, true} {
		sse, err := CompletionToSSE([]byte(completionText), usage)
		if err != nil {
			t.Fatal(err)
		}
		evs := dataEvents(t, sse)
		if evs[len(evs)-1] != nil {
			t.Fatal("no [DONE]")
		}
		for _, c := range evs[:len(evs)-1] {
			if c["object"] != "text_completion" || c["id"] != "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7" || c["model"] != "gpt-3.5-turbo-instruct" {
				t.Errorf("chunk %v", c)
			}
			if _, has := c["usage"]; has != usage {
				t.Errorf("usage present %v in %v", has, c)
			}
		}
		back, err := SSEToCompletion(sse)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, back, wantBack(t, completionText, usage))
	}
}

func TestCompletionLogprobs(t *testing.T) {
	body := `{"id":"cmpl-lp","object":"text_completion","created":1,"model":"gpt-3.5-turbo-instruct","choices":[{"text":"Hi there","index":0,
	"logprobs":{"tokens":["Hi"," there"],"token_logprobs":[-0.1,-0.2],"top_logprobs":[{"Hi":-0.1},{" there":-0.2}],"text_offset":[0,2]},"finish_reason":"stop"}],
	"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	sse, err := CompletionToSSE([]byte(body), true)
	if err != nil {
		t.Fatal(err)
	}
	back, err := SSEToCompletion(sse)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, back, []byte(body))
}

func TestResponseConversion(t *testing.T) {
	sse, err := ResponseToSSE([]byte(responseFull))
	if err != nil {
		t.Fatal(err)
	}
	evs := dataEvents(t, sse)
	var names []string
	var text, args, summary strings.Builder
	for i, e := range evs {
		if e["sequence_number"] != json.Number(strconv.Itoa(i)) {
			t.Errorf("event %d has sequence_number %v", i, e["sequence_number"])
		}
		typ := e["type"].(string)
		names = append(names, typ)
		switch typ {
		case "response.created", "response.in_progress":
			r := e["response"].(map[string]any)
			if r["status"] != "in_progress" || len(r["output"].([]any)) != 0 || r["usage"] != nil || r["id"] != "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41" {
				t.Errorf("%s: %v", typ, r)
			}
		case "response.output_text.delta":
			text.WriteString(e["delta"].(string))
			if e["item_id"] != "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41" || e["output_index"] != json.Number("1") || e["content_index"] != json.Number("0") {
				t.Errorf("delta placed at %v", e)
			}
		case "response.function_call_arguments.delta":
			args.WriteString(e["delta"].(string))
		case "response.reasoning_summary_text.delta":
			summary.WriteString(e["delta"].(string))
		case "response.output_item.added":
			item := e["item"].(map[string]any)
			if item["type"] == "message" && (item["status"] != "in_progress" || len(item["content"].([]any)) != 0) {
				t.Errorf("added item %v", item)
			}
		}
	}
	orig := decodeJSON(t, []byte(responseFull)).(map[string]any)
	out := orig["output"].([]any)
	wantText := out[1].(map[string]any)["content"].([]any)[0].(map[string]any)["text"]
	if text.String() != wantText {
		t.Errorf("text deltas assemble to %q", text.String())
	}
	if args.String() != out[2].(map[string]any)["arguments"] {
		t.Errorf("argument deltas assemble to %q", args.String())
	}
	if summary.String() != out[0].(map[string]any)["summary"].([]any)[0].(map[string]any)["text"] {
		t.Errorf("summary deltas assemble to %q", summary.String())
	}
	want := []string{
		"response.created", "response.in_progress",
		"response.output_item.added", "response.reasoning_summary_part.added",
		"response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
		"response.reasoning_summary_part.done", "response.output_item.done",
		"response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta",
		"response.output_text.annotation.added", "response.output_text.done",
		"response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.completed",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("events:\n%q\nwant\n%q", names, want)
	}
	if !reflect.DeepEqual(evs[len(evs)-1]["response"], orig) {
		t.Error("response.completed does not carry the response")
	}

	back, err := SSEToResponse(sse)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, back, []byte(responseFull))
}

func TestResponseIncomplete(t *testing.T) {
	body := strings.Replace(responseFull, `"status": "completed",`+"\n  \"background\"", `"status": "incomplete",`+"\n  \"background\"", 1)
	sse, err := ResponseToSSE([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(sse, []byte("event: response.incomplete\n")) {
		t.Error("no response.incomplete event")
	}
	back, err := SSEToResponse(sse)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, back, []byte(body))
}

func TestNotConvertible(t *testing.T) {
	for name, f := range map[string]func() ([]byte, error){
		"embeddings":        func() ([]byte, error) { return ToSSE(EndpointEmbeddings, []byte(`{"object":"list"}`), false) },
		"moderations back":  func() ([]byte, error) { return FromSSE(EndpointModerations, []byte("data: {}\n\n")) },
		"chat wrong object": func() ([]byte, error) { return ChatToSSE([]byte(completionText), false) },
		"completion object": func() ([]byte, error) { return CompletionToSSE([]byte(chatText), false) },
		"response failed":   func() ([]byte, error) { return ResponseToSSE([]byte(`{"object":"response","status":"failed"}`)) },
		"response queued":   func() ([]byte, error) { return ResponseToSSE([]byte(`{"object":"response","status":"queued"}`)) },
		"chat stream error": func() ([]byte, error) { return SSEToChat([]byte("data: {\"error\":{\"message\":\"boom\"}}\n\n")) },
		"empty chat stream": func() ([]byte, error) { return SSEToChat([]byte("data: [DONE]\n\n")) },
		"response no end": func() ([]byte, error) {
			return SSEToResponse([]byte("event: response.created\ndata: {\"type\":\"response.created\"}\n\n"))
		},
		"response failed sse": func() ([]byte, error) { return SSEToResponse([]byte("data: {\"type\":\"response.failed\"}\n\n")) },
	} {
		if _, err := f(); !errors.Is(err, ErrNotConvertible) {
			t.Errorf("%s: err %v, want ErrNotConvertible", name, err)
		}
	}
	for name, f := range map[string]func() ([]byte, error){
		"chat":      func() ([]byte, error) { return ChatToSSE([]byte(`{"object":"chat.completion",`), false) },
		"chat sse":  func() ([]byte, error) { return SSEToChat([]byte("data: {\"choices\":[}\n\n")) },
		"responses": func() ([]byte, error) { return ResponseToSSE([]byte(`nope`)) },
	} {
		if _, err := f(); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("%s: err %v, want ErrInvalidJSON", name, err)
		}
	}
}

func TestSplitText(t *testing.T) {
	for _, s := range []string{
		"", "short", strings.Repeat("a", 1000), strings.Repeat("é", 500), strings.Repeat("word ", 300),
		strings.Repeat("😀", 300) + "x",
	} {
		parts := splitText([]byte(s))
		var joined []byte
		for _, p := range parts {
			if len(p) > deltaBytes {
				t.Errorf("part of %d bytes", len(p))
			}
			if len(s) > 0 && len(p) == 0 {
				t.Error("empty part")
			}
			joined = append(joined, p...)
			if !json.Valid(appendQuoted(nil, p)) || strings.ContainsRune(string(p), 0xFFFD) {
				t.Errorf("part cut inside a character: %q", p)
			}
		}
		if string(joined) != s {
			t.Errorf("parts do not join back to %q", s)
		}
	}
}

func TestQuoteRoundTrip(t *testing.T) {
	for _, raw := range []string{
		`"plain"`, `"\"\\\/\b\f\n\r\t"`, `"\u0000\u001f\u007f"`, `"é😀\u2028"`, `"\ud800x\udfff"`, `"<>&"`,
	} {
		s, ok := decodeString([]byte(raw))
		if !ok {
			t.Fatalf("decodeString(%s) failed", raw)
		}
		q := appendQuoted(nil, s)
		if !json.Valid(q) {
			t.Errorf("%s quoted to invalid JSON %q", raw, q)
		}
		s2, ok := decodeString(q)
		if !ok || !bytes.Equal(s, s2) {
			t.Errorf("%s: round trip %q -> %q", raw, s, s2)
		}
	}
}

func BenchmarkChatToSSE(b *testing.B) {
	body := []byte(chatText)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ChatToSSE(body, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSSEToChat(b *testing.B) {
	sse, _ := ChatToSSE([]byte(chatText), true)
	b.SetBytes(int64(len(sse)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SSEToChat(sse); err != nil {
			b.Fatal(err)
		}
	}
}

func TestChatContentParts(t *testing.T) {
	body := `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,
		"message":{"role":"assistant","content":[{"type":"text","text":"hi"}],"refusal":null},"logprobs":null,"finish_reason":"stop"}]}`
	sse, err := ChatToSSE([]byte(body), false)
	if err != nil {
		t.Fatal(err)
	}
	back, err := SSEToChat(sse)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, back, []byte(body))
}

// FuzzConvertSSE checks that the stream converters neither panic nor
// produce what they cannot read back.
func FuzzConvertSSE(f *testing.F) {
	f.Add([]byte(chatStream), uint8(7))
	f.Add([]byte(chatToolStream), uint8(1))
	f.Add([]byte(chatN2Stream), uint8(3))
	f.Add([]byte(completionStream), uint8(50))
	f.Add([]byte("event: a\r\ndata: 1\r\rdata:x\n: c\n\n"), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, _ uint8) {
		if chat, err := SSEToChat(in); err == nil {
			stream, err := ChatToSSE(chat, true)
			if err != nil {
				t.Fatalf("assembled %s, which does not convert back: %v", chat, err)
			}
			again, err := SSEToChat(stream)
			if err != nil || !jsonEqual(again, chat) {
				t.Fatalf("assembled %s\nthen %s (%v)", chat, again, err)
			}
		}
		SSEToCompletion(in)
		SSEToResponse(in)
	})
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
