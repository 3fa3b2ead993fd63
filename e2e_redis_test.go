package openairelay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
	"github.com/caddyrelay/openairelay/internal/redistest"
)

// startRedisRelay runs the relay with `state redis` (and `cache redis`) on
// srv, with on_error as given.
func startRedisRelay(t *testing.T, fake *fakeopenai.Server, srv *redistest.Server, name, onError string) string {
	t.Helper()
	k := "sk-e2e-redis-" + name + "-0000rrrr"
	fake.AddKey(k, fakeopenai.KeyLimits{RPM: 600, TPM: 1000000})
	env := "E2E_REDIS_" + strings.ToUpper(name)
	t.Setenv(env, k)
	startRelay(t, fake, `
		client app {
			key rk-redis-app-000000
		}
		upstream shared {UPSTREAM} {
			key {env.`+env+`} {
				rpm 600
				tpm 1000000
			}
		}
		cache redis
		state redis {
			address `+srv.Addr()+`
			prefix e2e-`+name+`
			timeout 100ms
			on_error `+onError+`
		}`)
	return k
}

// redisKeys lists the keys in the Redis at addr, one string.
func redisKeys(addr string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, "*").Result()
	return strings.Join(keys, " "), err
}

// adminState is the start of GET /openai_relay/state, compacted: its
// store, prefix and mode.
func adminState(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://localhost:" + adminPort + "/openai_relay/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || len(v) != 1 {
		t.Fatalf("admin state: %v %v", v, err)
	}
	return fmt.Sprintf(`[{"store":%q,"prefix":%q,"mode":%q`, v[0]["store"], v[0]["prefix"], v[0]["mode"])
}

// TestE2EStateRedis runs a request path on Redis: limits reserved there,
// answers cached there, and with Redis stopped on_error local keeps
// serving without waiting on it.
func TestE2EStateRedis(t *testing.T) {
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := startRedisRelay(t, fake, srv, "local", "local")

	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"shared state"}]}`
	code, h, b := rawPost(t, "rk-redis-app-000000", "/chat/completions", body)
	if code != 200 || h.Get("X-Relay-Cache") != "MISS" {
		t.Fatalf("first: %d %s %s", code, h.Get("X-Relay-Cache"), b)
	}
	code, h, _ = rawPost(t, "rk-redis-app-000000", "/chat/completions", body)
	if code != 200 || h.Get("X-Relay-Cache") != "HIT" {
		t.Fatalf("second: %d %s", code, h.Get("X-Relay-Cache"))
	}
	keys, err := redisKeys(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"{e2e-local}:lim:key:", "{e2e-local}:instances", ":cache:"} {
		if !strings.Contains(keys, want) {
			t.Errorf("no Redis key with %q in %s", want, keys)
		}
	}
	if strings.Contains(keys, k) {
		t.Error("an upstream key appears in a Redis key name")
	}

	if v := adminState(t); v != `[{"store":"redis","prefix":"e2e-local","mode":"redis"` {
		t.Errorf("admin state with Redis up: %s", v)
	}
	srv.Stop()
	for i := range 5 {
		start := time.Now()
		code, _, b := rawPost(t, "rk-redis-app-000000", "/chat/completions",
			strings.Replace(body, "shared state", "outage "+string(rune('a'+i)), 1))
		if code != 200 {
			t.Fatalf("with Redis stopped: %d %s", code, b)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("a request with Redis stopped took %v", d)
		}
	}
	if v := adminState(t); v != `[{"store":"redis","prefix":"e2e-local","mode":"local"` {
		t.Errorf("admin state with Redis down: %s", v)
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, _ := redisKeys(srv.Addr())
		if strings.Contains(keys, ":lim:key:") {
			break // the instance writes to Redis again
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing written to Redis after its restart: %s", keys)
		}
		rawPost(t, "rk-redis-app-000000", "/chat/completions", strings.Replace(body, "shared state", "back "+time.Now().String(), 1))
		time.Sleep(200 * time.Millisecond)
	}
}

// TestE2EStateRedisReject checks that on_error reject answers 503 with an
// OpenAI error while Redis is down.
func TestE2EStateRedisReject(t *testing.T) {
	srv := redistest.Start(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	startRedisRelay(t, fake, srv, "reject", "reject")
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`
	if code, _, b := rawPost(t, "rk-redis-app-000000", "/chat/completions", body); code != 200 {
		t.Fatalf("with Redis up: %d %s", code, b)
	}
	srv.Stop()
	body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello again"}]}`
	code, _, b := rawPost(t, "rk-redis-app-000000", "/chat/completions", body)
	if code != 503 {
		t.Fatalf("with Redis down: %d %s; want 503", code, b)
	}
	var e struct {
		Error struct {
			Message, Type, Code string
		}
	}
	if err := json.Unmarshal([]byte(b), &e); err != nil || e.Error.Code != "state_unavailable" || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error: %s", b)
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, b = rawPost(t, "rk-redis-app-000000", "/chat/completions", body)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis restarted: %d %s", code, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
