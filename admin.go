package openairelay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrelay/openairelay/internal/limit"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the relay's state on Caddy's admin endpoint:
//
//	GET  /openai_relay/keys                 every key in use: limits, remaining, state
//	GET  /openai_relay/clients              every client: limits and remaining
//	POST /openai_relay/keys/<id>/retire     take a key out of rotation
//	POST /openai_relay/keys/<id>/restore    bring a retired or cooling key back
//	GET  /openai_relay/cache                entries, bytes and hit ratio of the caches
//	DELETE /openai_relay/cache              empty the caches
//
// It reads the package-level state shared by every relay handler, so it
// shows every site's keys and needs no config. No secret is ever shown.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.openai_relay",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/openai_relay/keys", Handler: caddy.AdminHandlerFunc(a.handleKeys)},
		{Pattern: "/openai_relay/keys/", Handler: caddy.AdminHandlerFunc(a.handleKeyAction)},
		{Pattern: "/openai_relay/clients", Handler: caddy.AdminHandlerFunc(a.handleClients)},
		{Pattern: "/openai_relay/cache", Handler: caddy.AdminHandlerFunc(a.handleCache)},
		{Pattern: "/openai_relay/state", Handler: caddy.AdminHandlerFunc(a.handleState)},
		{Pattern: "/openai_relay/status", Handler: caddy.AdminHandlerFunc(a.handleStatus)},
		{Pattern: "/openai_relay/", Handler: caddy.AdminHandlerFunc(a.handlePage)},
	}
}

// keyView is a key as the admin API shows it.
type keyView struct {
	ID            string       `json:"id"`
	Upstream      string       `json:"upstream"`
	LimitGroup    string       `json:"limit_group,omitempty"`
	State         string       `json:"state"` // available, cooling or retired
	RetiredReason string       `json:"retired_reason,omitempty"`
	RetiredAt     *time.Time   `json:"retired_at,omitempty"`
	NextProbe     *time.Time   `json:"next_probe,omitempty"`
	CoolingUntil  *time.Time   `json:"cooling_until,omitempty"`
	Requests      int64        `json:"requests"`
	Failures      int64        `json:"failures"`
	PromptTokens  int64        `json:"prompt_tokens"`
	OutputTokens  int64        `json:"completion_tokens"`
	LatencyMS     float64      `json:"latency_ms"`
	Sessions      int64        `json:"sessions"` // WebSocket sessions open on the key
	Limits        limit.Status `json:"limits"`
}

func (adminAPI) handleKeys(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	now := time.Now()
	views := []keyView{}
	keyStates.Range(func(_, v any) bool {
		views = append(views, v.(*keyState).view(now))
		return true
	})
	slices.SortFunc(views, func(a, b keyView) int {
		return strings.Compare(a.Upstream+"\x00"+a.ID, b.Upstream+"\x00"+b.ID)
	})
	return writeJSON(w, views)
}

func (ks *keyState) view(now time.Time) keyView {
	info := ks.info()
	v := keyView{
		ID: info.id, Upstream: info.upstream, LimitGroup: info.group, State: "available",
		Requests: ks.requests.Load(), Failures: ks.failures.Load(),
		PromptTokens: ks.tokensIn.Load(), OutputTokens: ks.tokensOut.Load(),
		LatencyMS: float64(ks.latencyNS.Load()) / 1e6,
		Sessions:  ks.sessions.Load(),
	}
	if info.limiter != nil {
		v.Limits = info.limiter.Status(now)
		if !v.Limits.CoolingUntil.IsZero() {
			v.State = "cooling"
			v.CoolingUntil = &v.Limits.CoolingUntil
		}
	}
	ks.mu.Lock()
	if ks.retiredReason != "" {
		v.State, v.RetiredReason = "retired", ks.retiredReason
		at, next := ks.retiredAt, ks.nextProbe
		v.RetiredAt = &at
		if !ks.manual {
			v.NextProbe = &next
		}
	}
	ks.mu.Unlock()
	return v
}

// handleKeyAction serves POST /openai_relay/keys/<id>/retire and /restore.
// The id is the key's name or fingerprint as GET /openai_relay/keys shows
// it; every key with that id (one key used under several upstream URLs) is
// changed.
func (adminAPI) handleKeyAction(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/openai_relay/keys/")
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("use /openai_relay/keys/<id>/retire or /restore")}
	}
	id, action := rest[:i], rest[i+1:]
	if action != "retire" && action != "restore" {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown action %q: use retire or restore", action)}
	}
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed: use POST")}
	}
	now := time.Now()
	var changed []keyView
	keyStates.Range(func(_, v any) bool {
		ks := v.(*keyState)
		info := ks.info()
		if info.id != id {
			return true
		}
		st := info.store
		if st == nil {
			st = inMemory
		}
		// The events of the config that loaded the key announce it.
		if action == "retire" {
			if st.retireManually(ks, now) {
				info.events.keyRetired(info, manualReason)
			}
		} else {
			cooling := info.limiter != nil && info.limiter.CoolingUntil().After(now)
			if st.restoreManually(ks) || cooling {
				info.events.keyRestored(info, "admin")
			}
			if info.limiter != nil {
				st.lift(info.limiter)
			}
		}
		changed = append(changed, ks.view(now))
		return true
	})
	if len(changed) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no key with id %q", id)}
	}
	if action == "restore" {
		capacityGen.Add(1)
		queues.notify()
	}
	return writeJSON(w, changed)
}

// clientView is a client as the admin API shows it.
type clientView struct {
	Name       string        `json:"name"`
	Priority   string        `json:"priority"`
	Requests   int64         `json:"requests"`
	SpentToday float64       `json:"spent_usd_today"`
	SpentMonth float64       `json:"spent_usd_this_month"`
	Limits     *limit.Status `json:"limits,omitempty"`
}

func (adminAPI) handleClients(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	now := time.Now()
	views := []clientView{}
	clientStates.Range(func(_, v any) bool {
		views = append(views, clientViewOf(v.(*clientState), now))
		return true
	})
	slices.SortFunc(views, func(a, b clientView) int { return strings.Compare(a.Name, b.Name) })
	return writeJSON(w, views)
}

// clientViewOf is the client as the admin API shows it.
func clientViewOf(cs *clientState, now time.Time) clientView {
	name, priority, l := cs.describe()
	view := clientView{Name: name, Priority: priority, Requests: cs.requests.Load(),
		SpentToday: cs.spent("daily", now), SpentMonth: cs.spent("monthly", now)}
	if l != nil {
		st := l.Status(now)
		view.Limits = &st
	}
	return view
}

// cacheView is the response caches as the admin API shows them.
type cacheView struct {
	Entries   int64   `json:"entries"`
	Bytes     int64   `json:"bytes"`
	Hits      uint64  `json:"hits"`
	Misses    uint64  `json:"misses"`
	HitRatio  float64 `json:"hit_ratio"`
	Evictions uint64  `json:"evictions"`
	Expired   uint64  `json:"expired"`
}

func (adminAPI) handleCache(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet:
	case http.MethodDelete:
		cacheStores.Range(func(_, v any) bool {
			v.(*sharedStore).store.Purge(r.Context())
			return true
		})
	default:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed: use GET or DELETE")}
	}
	return writeJSON(w, cacheSummary())
}

// cacheSummary is every cache store's statistics added up.
func cacheSummary() cacheView {
	st := cacheStats()
	v := cacheView{Entries: st.Entries, Bytes: st.Bytes, Hits: st.Hits, Misses: st.Misses, Evictions: st.Evictions, Expired: st.Expired}
	if lookups := st.Hits + st.Misses; lookups > 0 {
		v.HitRatio = float64(st.Hits) / float64(lookups)
	}
	return v
}

// stateView is one shared state as the admin API shows it: no address or
// credential, only what says whether the instance shares its limits.
type stateView struct {
	Store          string `json:"store"`
	Prefix         string `json:"prefix"`
	Mode           string `json:"mode"` // redis, local or reject
	InstancesAlive int64  `json:"instances_alive"`
	Limiters       int    `json:"limiters"`
	Keys           int    `json:"keys"`
	InFlight       int    `json:"reservations_in_flight"`
}

// handleState serves GET /openai_relay/state: the shared states in use
// (an empty list when every config keeps its state in memory).
func (adminAPI) handleState(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed: use GET")}
	}
	views := []stateView{}
	redisStates.Range(func(_, v any) bool {
		views = append(views, v.(*redisState).view())
		return true
	})
	slices.SortFunc(views, func(a, b stateView) int { return strings.Compare(a.Prefix, b.Prefix) })
	return writeJSON(w, views)
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "\t")
	return enc.Encode(v)
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
