package openairelay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/caddyrelay/openairelay"
	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The end-to-end tests run one in-process Caddy (caddytest starts it on the
// first InitServer and reloads it for every test) with the relay in front of
// the fake OpenAI upstream, and drive it with the official Go SDK. Key state
// survives reloads by design, so every test uses keys of its own.

// The ports can be moved with E2E_HTTP_PORT and E2E_ADMIN_PORT, so that two
// test processes on one machine do not collide.
var (
	httpPort  = envOr("E2E_HTTP_PORT", "9080")
	adminPort = envOr("E2E_ADMIN_PORT", "2999")
	relayBase = "http://localhost:" + httpPort + "/v1"
	adminBase = "http://localhost:" + adminPort
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var logDir string

func TestMain(m *testing.M) {
	// Keep Caddy's autosave and storage out of the user's directories.
	tmp, err := os.MkdirTemp("", "openai-relay-e2e")
	if err != nil {
		panic(err)
	}
	// TestMain has no t: these hold for the whole process (Caddy reads them
	// at start), and the process ends with the tests.
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	os.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	logDir = tmp
	// The snapshot writer saves often enough for a test to see it.
	openairelay.SetSnapshotInterval(200 * time.Millisecond)
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

func TestE2EEndpoints(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-endpoints-upstream-0001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_ENDPOINTS_KEY", upKey)
	e := startRelay(t, fake, `
		client app {
			key rk-endpoints-client
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_ENDPOINTS_KEY}
		}`)
	client := sdk("rk-endpoints-client")
	ctx := context.Background()

	t.Run("chat", func(t *testing.T) {
		res, err := client.Chat.Completions.New(ctx, chatParams("hello relay"), option.WithHeader("OpenAI-Organization", "org-client"))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Choices[0].Message.Content; !strings.Contains(got, "hello relay") {
			t.Errorf("content %q", got)
		}
		if res.Usage.TotalTokens == 0 {
			t.Error("no usage")
		}
	})
	t.Run("chat stream", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, chatParams("stream me please"))
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; !strings.Contains(got, "stream me please") {
			t.Errorf("streamed content %q", got)
		}
	})
	t.Run("embeddings", func(t *testing.T) {
		res, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("a b c")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Data) != 1 || len(res.Data[0].Embedding) == 0 {
			t.Errorf("embedding %+v", res.Data)
		}
	})
	t.Run("responses", func(t *testing.T) {
		res, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("respond please")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.OutputText(), "respond please") {
			t.Errorf("output %q", res.OutputText())
		}
	})
	t.Run("responses stream", func(t *testing.T) {
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("stream a response")},
		})
		var text strings.Builder
		completed := false
		for stream.Next() {
			ev := stream.Current()
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed":
				completed = true
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if !completed || !strings.Contains(text.String(), "stream a response") {
			t.Errorf("completed %v text %q", completed, text.String())
		}
	})
	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) == 0 {
			t.Error("no models")
		}
	})
	t.Run("multipart upload", func(t *testing.T) {
		audio := bytes.Repeat([]byte("RIFFWAVE"), 2048)
		res, err := client.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
			File:  openai.File(bytes.NewReader(audio), "speech.wav", "audio/wav"),
			Model: "whisper-1",
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Text, fmt.Sprint(len(audio))) {
			t.Errorf("transcription %q does not show the whole file arrived", res.Text)
		}
	})
	t.Run("api-key header", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/embeddings", strings.NewReader(`{"model":"text-embedding-3-small","input":"azure style"}`))
		req.Header.Set("api-key", "rk-endpoints-client")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("wrong client key", func(t *testing.T) {
		other := sdk("rk-not-a-client")
		_, err := other.Chat.Completions.New(ctx, chatParams("x"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
			t.Fatalf("got %v; want a 401 invalid_api_key", err)
		}
	})
	t.Run("model not served", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
			t.Fatalf("got %v; want the upstream's 404", err)
		}
	})

	for _, rec := range fake.Records() {
		if rec.Key != upKey {
			t.Errorf("upstream saw key %q on %s", rec.Key, rec.Path)
		}
	}
	e.assertNoSecrets([]string{upKey}, []string{"rk-endpoints-client"})
}

func TestE2EModelListFollowsAllowList(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	upKey := "sk-e2e-models-upstream-0001"
	fake.AddKey(upKey, fakeopenai.KeyLimits{})
	t.Setenv("E2E_MODELS_KEY", upKey)
	startRelay(t, fake, `
		client narrow {
			key rk-models-narrow
			models gpt-4o-mini text-embedding-*
		}
		upstream fake {UPSTREAM} {
			key {env.E2E_MODELS_KEY}
		}`)
	client := sdk("rk-models-narrow")
	page, err := client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	if len(ids) != 2 || !slices.Contains(ids, "gpt-4o-mini") || !slices.Contains(ids, "text-embedding-3-small") {
		t.Errorf("models listed: %v; want only gpt-4o-mini and text-embedding-3-small", ids)
	}
	if _, err := client.Models.Get(context.Background(), "gpt-4o-mini"); err != nil {
		t.Errorf("an allowed model: %v", err)
	}
	_, err = client.Models.Get(context.Background(), "gpt-4o")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("a model the client may not use: %v; want 404", err)
	}
}
