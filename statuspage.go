package openairelay

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// The status page: GET /openai_relay/ on the admin endpoint is one page,
// embedded in the binary (statuspage/), that reads GET /openai_relay/status
// every second and acts through the admin API's own routes (retire,
// restore, empty the cache). Like the rest of the admin API it shows no
// secret: keys by their names or fingerprints, clients by their names.

//go:embed statuspage
var statusFiles embed.FS

// statusAssets are the page's files, by name.
var statusAssets = func() fs.FS {
	sub, err := fs.Sub(statusFiles, "statuspage")
	if err != nil {
		panic(err) // the embed directive names the directory
	}
	return sub
}()

// handlePage serves the page and its assets under /openai_relay/.
func (adminAPI) handlePage(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed: use GET")}
	}
	name := strings.TrimPrefix(r.URL.Path, "/openai_relay/")
	if name == "" {
		name = "index.html"
	}
	data, err := fs.ReadFile(statusAssets, name)
	if err != nil || strings.Contains(name, "/") {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such page: %s", r.URL.Path)}
	}
	switch path.Ext(name) {
	case ".html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	}
	// Everything the page loads comes from here: no CDN, no inline script
	// (inline styles are the bars' widths).
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	_, err = w.Write(data)
	return err
}

// statusView is everything the page shows, in one answer.
type statusView struct {
	Now       time.Time          `json:"now"`
	Upstreams []upstreamView     `json:"upstreams"`
	Keys      []statusKeyView    `json:"keys"`
	Clients   []statusClientView `json:"clients"`
	Queue     queueView          `json:"queue"`
	Cache     cacheView          `json:"cache"`
	State     []stateView        `json:"state"`
	History   historyView        `json:"history"`
}

// upstreamView is an upstream as the page lists it.
type upstreamView struct {
	Name   string `json:"name"`
	Tier   int    `json:"tier"`
	Weight int    `json:"weight"`
	Keys   int    `json:"keys"`
}

// statusKeyView is a key with what the page adds to the admin API's view:
// its place in the pool and its last minute.
type statusKeyView struct {
	keyView
	Tier           int   `json:"tier"`
	UpstreamWeight int   `json:"upstream_weight"`
	Weight         int   `json:"weight"`
	MinuteRequests int64 `json:"minute_requests"`
	MinuteTokens   int64 `json:"minute_tokens"`
	RateLimited    int64 `json:"rate_limited"`
}

// statusClientView is a client with its tokens and budget.
type statusClientView struct {
	clientView
	PromptTokens int64   `json:"prompt_tokens"`
	OutputTokens int64   `json:"completion_tokens"`
	Budget       *Budget `json:"budget,omitempty"`
	// BudgetLeft is what remains of the budget in its period.
	BudgetLeft *float64 `json:"budget_left_usd,omitempty"`
}

// queueView is the queues of every relay handler.
type queueView struct {
	Length     int            `json:"length"`
	OldestWait float64        `json:"oldest_wait_seconds"`
	ByPriority map[string]int `json:"by_priority"`
}

// historyView is the last 15 minutes, a sample a second.
type historyView struct {
	Outcomes []string        `json:"outcomes"`
	Samples  []historySample `json:"samples"`
}

// handleStatus serves GET /openai_relay/status[?since=<unix seconds>]: the
// page's data, with the history samples after since.
func (adminAPI) handleStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed: use GET")}
	}
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	return writeJSON(w, buildStatus(time.Now(), since))
}

func buildStatus(now time.Time, since int64) statusView {
	v := statusView{Now: now, Keys: []statusKeyView{}, Clients: []statusClientView{}, Upstreams: []upstreamView{}, State: []stateView{}}
	ups := map[string]*upstreamView{}
	keyStates.Range(func(_, x any) bool {
		ks := x.(*keyState)
		info := ks.info()
		reqs, toks := ks.minute.lastMinute(now)
		v.Keys = append(v.Keys, statusKeyView{keyView: ks.view(now), Tier: info.tier, UpstreamWeight: info.upstreamWeight,
			Weight: info.weight, MinuteRequests: reqs, MinuteTokens: toks, RateLimited: ks.rateLimited.Load()})
		u := ups[info.upstream]
		if u == nil {
			u = &upstreamView{Name: info.upstream, Tier: info.tier, Weight: info.upstreamWeight}
			ups[info.upstream] = u
		}
		u.Keys++
		return true
	})
	slices.SortFunc(v.Keys, func(a, b statusKeyView) int {
		return strings.Compare(a.Upstream+"\x00"+a.ID, b.Upstream+"\x00"+b.ID)
	})
	for _, u := range ups {
		v.Upstreams = append(v.Upstreams, *u)
	}
	slices.SortFunc(v.Upstreams, func(a, b upstreamView) int {
		if a.Tier != b.Tier {
			return a.Tier - b.Tier
		}
		return strings.Compare(a.Name, b.Name)
	})
	clientStates.Range(func(_, x any) bool {
		v.Clients = append(v.Clients, clientStatus(x.(*clientState), now))
		return true
	})
	slices.SortFunc(v.Clients, func(a, b statusClientView) int { return strings.Compare(a.Name, b.Name) })

	qs := queues.stats()
	v.Queue = queueView{Length: qs.Len, ByPriority: map[string]int{"high": 0, "normal": 0, "low": 0}}
	for p, n := range qs.ByPriority {
		v.Queue.ByPriority[priorityName(p)] += n
	}
	if !qs.Oldest.IsZero() {
		v.Queue.OldestWait = now.Sub(qs.Oldest).Seconds()
	}
	v.Cache = cacheSummary()
	redisStates.Range(func(_, x any) bool {
		v.State = append(v.State, x.(*redisState).view())
		return true
	})
	v.History = historyView{Outcomes: historyOutcomes[:], Samples: []historySample{}}
	for _, s := range historySamples() {
		if s.T > since {
			v.History.Samples = append(v.History.Samples, s)
		}
	}
	return v
}

// clientStatus is a client as the page shows it.
func clientStatus(cs *clientState, now time.Time) statusClientView {
	v := statusClientView{clientView: clientViewOf(cs, now), PromptTokens: cs.tokensIn.Load(), OutputTokens: cs.tokensOut.Load()}
	cs.mu.Lock()
	b := cs.budget
	cs.mu.Unlock()
	if b != nil {
		spent := v.SpentMonth
		if b.Period == "daily" {
			spent = v.SpentToday
		}
		left := max(b.USD-spent, 0)
		v.Budget, v.BudgetLeft = b, &left
	}
	return v
}

// priorityName names a queue priority as the Caddyfile does.
func priorityName(p int) string {
	switch {
	case p > priorityNormal:
		return "high"
	case p < priorityNormal:
		return "low"
	}
	return "normal"
}
