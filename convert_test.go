package openairelay_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyrelay/openairelay/internal/cache"
	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// TestConversionMatchesUpstream checks the cache's stream ↔ answer
// conversion against the fake upstream's own answers: the answer assembled
// from a real stream carries what the upstream's own non-stream answer to
// the same request does, and a stream made from an answer assembles back to
// it.
func TestConversionMatchesUpstream(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 4})
	defer fake.Close()
	fake.AddKey("sk-convert", fakeopenai.KeyLimits{})
	post := func(path, body string) []byte {
		req, _ := http.NewRequest(http.MethodPost, fake.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-convert")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, out)
		}
		return out
	}
	tests := []struct {
		name, path, body string
		ep               cache.Endpoint
		// fields picks what must agree between two answers.
		fields func(t *testing.T, answer []byte) string
	}{
		{"chat", "/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"one two three four five"}]%s}`,
			cache.EndpointChatCompletions, chatFields},
		{"chat tools", "/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],"tool_choice":"required"%s}`,
			cache.EndpointChatCompletions, chatFields},
		{"completions", "/completions", `{"model":"gpt-4o-mini","prompt":"say one two three"%s}`,
			cache.EndpointCompletions, completionFields},
		{"responses", "/responses", `{"model":"gpt-4o-mini","input":"respond with words"%s}`,
			cache.EndpointResponses, responseFields},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answer := post(tt.path, strings.Replace(tt.body, "%s", "", 1))
			stream := post(tt.path, strings.Replace(tt.body, "%s", `,"stream":true,"stream_options":{"include_usage":true}`, 1))
			if tt.ep == cache.EndpointResponses {
				stream = post(tt.path, strings.Replace(tt.body, "%s", `,"stream":true`, 1))
			}
			assembled, err := cache.FromSSE(tt.ep, stream)
			if err != nil {
				t.Fatalf("assembling the upstream's stream: %v", err)
			}
			if got, want := tt.fields(t, assembled), tt.fields(t, answer); got != want {
				t.Errorf("stream assembled:\n%s\nupstream's answer:\n%s", got, want)
			}
			made, err := cache.ToSSE(tt.ep, answer, true)
			if err != nil {
				t.Fatalf("streaming the upstream's answer: %v", err)
			}
			back, err := cache.FromSSE(tt.ep, made)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := tt.fields(t, back), tt.fields(t, answer); got != want {
				t.Errorf("answer → stream → answer:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func decode(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
}

func chatFields(t *testing.T, answer []byte) string {
	var v struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content   *string `json:"content"`
				ToolCalls []struct {
					Type     string `json:"type"`
					Function struct {
						Name, Arguments string
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage"`
	}
	decode(t, answer, &v)
	out, _ := json.Marshal(v)
	return string(out)
}

func completionFields(t *testing.T, answer []byte) string {
	var v struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage"`
	}
	decode(t, answer, &v)
	out, _ := json.Marshal(v)
	return string(out)
}

func responseFields(t *testing.T, answer []byte) string {
	var v struct {
		Object string `json:"object"`
		Status string `json:"status"`
		Output []struct {
			Type    string `json:"type"`
			Role    string `json:"role"`
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
		Usage json.RawMessage `json:"usage"`
	}
	decode(t, answer, &v)
	out, _ := json.Marshal(v)
	return string(out)
}
