package openairelay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// eventRecorder is a test-only event handler that keeps every event it is
// given in recordedEvents.
type eventRecorder struct{}

// CaddyModule returns the Caddy module information.
func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "events.handlers.openai_relay_test_recorder",
		New: func() caddy.Module { return new(eventRecorder) },
	}
}

// UnmarshalCaddyfile takes no options: `on <event> openai_relay_test_recorder`.
func (*eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// Handle records the event.
func (*eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	rec := recordedEvent{Name: e.Name(), Data: make(map[string]any, len(e.Data))}
	if o := e.Origin(); o != nil {
		rec.Origin = string(o.CaddyModule().ID)
	}
	for k, v := range e.Data {
		rec.Data[k] = v
	}
	recordedEvents.Lock()
	recordedEvents.list = append(recordedEvents.list, rec)
	recordedEvents.Unlock()
	return nil
}

type recordedEvent struct {
	Name, Origin string
	Data         map[string]any
}

var recordedEvents struct {
	sync.Mutex
	list []recordedEvent
}

func resetEvents() {
	recordedEvents.Lock()
	recordedEvents.list = nil
	recordedEvents.Unlock()
}

// eventsNamed returns the recorded events named name that match, in order.
func eventsNamed(name string, match func(map[string]any) bool) []recordedEvent {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	var out []recordedEvent
	for _, e := range recordedEvents.list {
		if e.Name == name && (match == nil || match(e.Data)) {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits (up to timeout) for an event named name that matches,
// and fails the test without one.
func waitEvent(t *testing.T, timeout time.Duration, name string, match func(map[string]any) bool) recordedEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if got := eventsNamed(name, match); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			recordedEvents.Lock()
			all := fmt.Sprint(recordedEvents.list)
			recordedEvents.Unlock()
			t.Fatalf("no %s event in %v; recorded: %s", name, timeout, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func keyIs(id string) func(map[string]any) bool {
	return func(d map[string]any) bool { return d["key_id"] == id }
}

// TestE2EEvents subscribes a recorder to the relay's events through the
// global `events` option and checks that each is emitted, with the relay
// as its origin and no secret in its data: a key retired after a 401 and
// restored by its probe, retired and restored through the admin API; a key
// cooling after a 429 with Retry-After; a client over its budget (once);
// a full queue.
func TestE2EEvents(t *testing.T) {
	resetEvents()
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	secrets := map[string]string{
		"EV_DEAD":  "sk-e2e-events-dead-00000001",
		"EV_COOL":  "sk-e2e-events-cool-00000002",
		"EV_GOOD":  "sk-e2e-events-good-00000003",
		"EV_QUEUE": "sk-e2e-events-queue-0000004",
	}
	for env, k := range secrets {
		fake.AddKey(k, fakeopenai.KeyLimits{})
		t.Setenv(env, k)
	}
	fake.SetKeyState(secrets["EV_DEAD"], fakeopenai.KeyInvalid)
	clientKeys := []string{"rk-events-app-client", "rk-events-spender", "rk-events-queuer"}

	var global strings.Builder
	global.WriteString("\tevents {\n")
	for _, name := range []string{"key_retired", "key_restored", "key_cooling", "budget_spent", "queue_full"} {
		fmt.Fprintf(&global, "\t\ton %s openai_relay_test_recorder\n", name)
	}
	global.WriteString("\t}")
	startSites(t, global.String(), fmt.Sprintf(`
	handle_path /main/* {
		openai_relay {
			client app {
				key rk-events-app-client
			}
			client spender {
				key rk-events-spender
				budget 0.000001 daily
			}
			upstream pool %[1]s {
				key {env.EV_DEAD} {
					name dead
				}
				key {env.EV_COOL} {
					name cool
				}
				key {env.EV_GOOD} {
					name good
				}
			}
			balance weighted_round_robin
			retries 4
			probe_backoff 1s
			price gpt-4o-mini 1 1
		}
	}
	handle_path /queue/* {
		openai_relay {
			client queuer {
				key rk-events-queuer
			}
			upstream lone %[1]s {
				max_concurrent 1
				key {env.EV_QUEUE} {
					name qkey
				}
			}
			max_queue 1
			max_wait 10s
		}
	}`, fake.URL()))

	post := func(site, clientKey string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://localhost:"+httpPort+"/"+site+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"tell the pager"}]}`))
		req.Header.Set("Authorization", "Bearer "+clientKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	admin := func(id, action string) {
		t.Helper()
		resp, err := http.Post(adminBase+"/openai_relay/keys/"+id+"/"+action, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s %s: %d", id, action, resp.StatusCode)
		}
	}

	t.Run("key retired and cooling", func(t *testing.T) {
		// Retry-After says 30s (and retry-after-ms, which the fake would
		// otherwise set to a second, agrees).
		fake.AddFault(fakeopenai.Fault{Status: http.StatusTooManyRequests, Key: secrets["EV_COOL"], Count: 1,
			Header: http.Header{"Retry-After": {"30"}, "Retry-After-Ms": {"30000"}}})
		sent := time.Now()
		for i := range 6 {
			if code := post("main", "rk-events-app-client"); code != http.StatusOK {
				t.Fatalf("request %d: %d", i, code)
			}
		}
		retired := waitEvent(t, 5*time.Second, "key_retired", keyIs("dead"))
		if reason, _ := retired.Data["reason"].(string); !strings.Contains(reason, "401") {
			t.Errorf("key_retired reason %q; want the 401", reason)
		}
		if retired.Data["upstream"] != "pool" {
			t.Errorf("key_retired upstream %v; want pool", retired.Data["upstream"])
		}
		if retired.Origin != "http.handlers.openai_relay" {
			t.Errorf("origin %q; want http.handlers.openai_relay", retired.Origin)
		}
		cooling := waitEvent(t, 5*time.Second, "key_cooling", keyIs("cool"))
		until, err := time.Parse(time.RFC3339, fmt.Sprint(cooling.Data["until"]))
		if err != nil {
			t.Fatalf("key_cooling until %v: %v", cooling.Data["until"], err)
		}
		if d := until.Sub(sent); d < 28*time.Second || d > 40*time.Second {
			t.Errorf("key_cooling until %s is %s after the request; want the Retry-After's 30s", until, d)
		}
		if n := len(eventsNamed("key_retired", keyIs("dead"))); n != 1 {
			t.Errorf("%d key_retired events for one retirement; want 1", n)
		}
	})

	t.Run("key restored by its probe", func(t *testing.T) {
		fake.SetKeyState(secrets["EV_DEAD"], fakeopenai.KeyOK)
		ev := waitEvent(t, 10*time.Second, "key_restored", keyIs("dead"))
		if ev.Data["how"] != "probe" {
			t.Errorf("key_restored how %v; want probe", ev.Data["how"])
		}
	})

	t.Run("admin retire and restore", func(t *testing.T) {
		admin("dead", "retire")
		ev := waitEvent(t, 5*time.Second, "key_retired", func(d map[string]any) bool {
			return d["key_id"] == "dead" && d["reason"] == "retired through the admin API"
		})
		if ev.Data["upstream"] != "pool" {
			t.Errorf("key_retired upstream %v; want pool", ev.Data["upstream"])
		}
		admin("dead", "restore")
		waitEvent(t, 5*time.Second, "key_restored", func(d map[string]any) bool {
			return d["key_id"] == "dead" && d["how"] == "admin"
		})
	})

	t.Run("budget spent once", func(t *testing.T) {
		codes := map[int]int{}
		for range 4 {
			codes[post("main", "rk-events-spender")]++
		}
		if codes[http.StatusOK] != 1 || codes[http.StatusTooManyRequests] != 3 {
			t.Fatalf("answers %v; want one 200 then three 429", codes)
		}
		ev := waitEvent(t, 5*time.Second, "budget_spent", nil)
		if ev.Data["client"] != "spender" || ev.Data["period"] != "daily" || ev.Data["budget_usd"] != 0.000001 {
			t.Errorf("budget_spent data %v", ev.Data)
		}
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(ev.Data["renews"])); err != nil {
			t.Errorf("budget_spent renews %v: %v", ev.Data["renews"], err)
		}
		time.Sleep(200 * time.Millisecond)
		if n := len(eventsNamed("budget_spent", nil)); n != 1 {
			t.Errorf("%d budget_spent events for three refusals in one period; want 1", n)
		}
	})

	t.Run("queue full", func(t *testing.T) {
		// The key takes one request at a time and holds it for a second:
		// the second waits in the queue of one, the third and fourth find
		// it full (one event: at most one a second).
		fake.AddFault(fakeopenai.Fault{Latency: 1500 * time.Millisecond, Key: secrets["EV_QUEUE"], Count: 1})
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for i := range 4 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 150 * time.Millisecond)
				code := post("queue", "rk-events-queuer")
				mu.Lock()
				codes[code]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if codes[http.StatusOK] != 2 || codes[http.StatusTooManyRequests] != 2 {
			t.Errorf("answers %v; want two served (one in flight, one queued) and two refused", codes)
		}
		ev := waitEvent(t, 5*time.Second, "queue_full", nil)
		if ev.Data["max_queue"] != 1 {
			t.Errorf("queue_full max_queue %v; want 1", ev.Data["max_queue"])
		}
		if n := len(eventsNamed("queue_full", nil)); n != 1 {
			t.Errorf("%d queue_full events within a second; want 1", n)
		}
	})

	// No event carries a secret: neither an upstream key nor a client's.
	recordedEvents.Lock()
	all, _ := json.Marshal(recordedEvents.list)
	recordedEvents.Unlock()
	for _, s := range append(mapValues(secrets), clientKeys...) {
		if strings.Contains(string(all), s) {
			t.Errorf("a secret %s… is in the events' data: %s", s[:8], all)
		}
	}
}

// Interface guards
var (
	_ caddyevents.Handler   = (*eventRecorder)(nil)
	_ caddyfile.Unmarshaler = (*eventRecorder)(nil)
)
