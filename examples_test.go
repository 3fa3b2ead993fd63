package openairelay

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestExamplesValidate adapts and validates every Caddyfile in examples/, as
// `caddy validate` does, with the environment variables they read set.
func TestExamplesValidate(t *testing.T) {
	for _, env := range []string{"RELAY_KEY", "OPENAI_API_KEY", "WEB_RELAY_KEY", "BATCH_RELAY_KEY",
		"OPENAI_KEY_A1", "OPENAI_KEY_A2", "OPENAI_KEY_B", "LOCAL_KEY", "AZURE_RESOURCE", "AZURE_OPENAI_KEY", "REDIS_PASSWORD"} {
		t.Setenv(env, "test-value-for-"+env)
	}
	// cluster.Caddyfile names a Redis: nothing listens on port 1, so the
	// relay starts in local mode, as it would with Redis down.
	t.Setenv("REDIS_ADDR", "127.0.0.1:1")
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	files, _ := filepath.Glob("examples/*Caddyfile")
	if len(files) < 4 {
		t.Fatalf("found %d examples", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(data, map[string]any{"filename": file})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w)
			}
			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatalf("validate: %v", err)
			}
		})
	}
}
