package openairelay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"
)

// The relay's Caddy events, emitted through the events app (Caddyfile:
// the global `events { on <name> <handler> }` option) with the relay
// handler (http.handlers.openai_relay) as their origin:
//
//	Event          Data                                  When
//	key_retired    key_id, upstream, reason              a key is taken out of rotation (401/403 about
//	                                                     the key, no quota, or the admin API)
//	key_restored   key_id, upstream, how (probe, admin)  a retired key passed its probe, or the admin
//	                                                     API restored a retired or cooling key
//	key_cooling    key_id, upstream, until (RFC 3339)    a key that was not cooling got a 429
//	budget_spent   client, period, budget_usd, renews    a client's budget first refused a request in
//	                                                     a period (once per client and period)
//	queue_full     max_queue                             a request was refused because the relay's
//	                                                     queue was full (at most once a second)
//
// No event carries a secret: keys are named by their id (their name or
// fingerprint, as the admin API and metrics show them). Each instance
// emits what happened in it; a key retired or restored by another instance
// sharing its state is not announced again here.
const (
	eventKeyRetired  = "key_retired"
	eventKeyRestored = "key_restored"
	eventKeyCooling  = "key_cooling"
	eventBudgetSpent = "budget_spent"
	eventQueueFull   = "queue_full"
)

// maxPendingEvents bounds the events waiting for their handlers: past it
// (handlers far slower than the events come) new ones are dropped, logged.
const maxPendingEvents = 256

// relayEvents emits one relay config's events. Handlers run synchronously
// in Emit and may be slow (a handler that runs a command), so events are
// queued and emitted in order by one goroutine, started when there is
// something to emit and ended when there is not: the caller, often a
// request, never waits for a handler. A nil *relayEvents (no events app
// configured) emits nothing.
type relayEvents struct {
	app    *caddyevents.App
	ctx    caddy.Context // the relay's: the events' origin, done when the config is unloaded
	logger *zap.Logger

	mu      sync.Mutex
	pending []relayEvent
	running bool

	// lastQueueFull is when queue_full was last emitted (Unix nanoseconds).
	lastQueueFull atomic.Int64
}

type relayEvent struct {
	name string
	data map[string]any
}

// newRelayEvents returns the emitter of the relay provisioned with ctx, or
// nil when the config has no events app.
func newRelayEvents(ctx caddy.Context, logger *zap.Logger) (*relayEvents, error) {
	appIface, err := ctx.AppIfConfigured("events")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting events app: %v", err)
	}
	app, ok := appIface.(*caddyevents.App)
	if !ok {
		return nil, fmt.Errorf("the events app is a %T", appIface)
	}
	return &relayEvents{app: app, ctx: ctx, logger: logger}, nil
}

// wanted reports whether an event named name would be seen by anything (a
// subscribed handler, or the events app's debug log), so that its data is
// assembled only then.
func (ev *relayEvents) wanted(name string) bool {
	return ev != nil && ev.app.ShouldEmit(name)
}

// emit queues the event for the emitting goroutine.
func (ev *relayEvents) emit(name string, data map[string]any) {
	ev.mu.Lock()
	if len(ev.pending) >= maxPendingEvents {
		ev.mu.Unlock()
		ev.logger.Warn("event handlers are behind; event dropped", zap.String("event", name))
		return
	}
	ev.pending = append(ev.pending, relayEvent{name: name, data: data})
	start := !ev.running
	ev.running = true
	ev.mu.Unlock()
	if start {
		go ev.drain()
	}
}

// drain emits the queued events in order until none is left.
func (ev *relayEvents) drain() {
	for {
		ev.mu.Lock()
		if len(ev.pending) == 0 {
			ev.pending, ev.running = nil, false
			ev.mu.Unlock()
			return
		}
		e := ev.pending[0]
		ev.pending = ev.pending[1:]
		ev.mu.Unlock()
		if ev.ctx.Err() != nil {
			// The config was unloaded: as in Caddy's own modules, its
			// events end with it.
			ev.logger.Debug("config unloaded; event not emitted", zap.String("event", e.name))
			continue
		}
		// Emit adds the event's placeholders to the context's replacer:
		// each event gets its own, never one shared with another goroutine.
		c := ev.ctx
		c.Context = context.WithValue(ev.ctx.Context, caddy.ReplacerCtxKey, caddy.NewReplacer())
		ev.app.Emit(c, e.name, e.data)
	}
}

// keyRetired announces that the key info describes was taken out of
// rotation for reason.
func (ev *relayEvents) keyRetired(info keyInfo, reason string) {
	if !ev.wanted(eventKeyRetired) {
		return
	}
	ev.emit(eventKeyRetired, map[string]any{"key_id": info.id, "upstream": info.upstream, "reason": reason})
}

// keyRestored announces that a retired (or cooling) key is back, restored
// by how: "probe" or "admin".
func (ev *relayEvents) keyRestored(info keyInfo, how string) {
	if !ev.wanted(eventKeyRestored) {
		return
	}
	ev.emit(eventKeyRestored, map[string]any{"key_id": info.id, "upstream": info.upstream, "how": how})
}

// keyCooling announces that a key rests after a 429 until until.
func (ev *relayEvents) keyCooling(k *poolKey, until time.Time) {
	if !ev.wanted(eventKeyCooling) {
		return
	}
	ev.emit(eventKeyCooling, map[string]any{"key_id": k.id, "upstream": k.upstream.Name, "until": until.UTC().Format(time.RFC3339)})
}

// budgetSpent announces that a client's budget refused a request; the
// caller makes it once per client and period.
func (ev *relayEvents) budgetSpent(c *Client, renews time.Time) {
	if !ev.wanted(eventBudgetSpent) {
		return
	}
	ev.emit(eventBudgetSpent, map[string]any{"client": c.Name, "period": c.Budget.Period,
		"budget_usd": c.Budget.USD, "renews": renews.UTC().Format(time.RFC3339)})
}

// queueFull announces that the relay's queue refused a request, at most
// once a second.
func (ev *relayEvents) queueFull(maxQueue int, now time.Time) {
	if !ev.wanted(eventQueueFull) {
		return
	}
	last := ev.lastQueueFull.Load()
	if now.UnixNano()-last < int64(time.Second) || !ev.lastQueueFull.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	ev.emit(eventQueueFull, map[string]any{"max_queue": maxQueue})
}
