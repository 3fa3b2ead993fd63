package openairelay

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// testTier is a tier of one upstream whose keys have the given limits.
func testTier(t *testing.T, name string, priority int, limits ...limit.Limits) *tier {
	t.Helper()
	u := &Upstream{Name: name, Weight: 1, Priority: priority}
	keys := make([]*poolKey, len(limits))
	for i, l := range limits {
		keys[i] = &poolKey{id: name + "-" + string(rune('a'+i)), upstream: u, weight: 1,
			state: &keyState{}, limiter: limit.NewLimiter(l)}
		keys[i].state.answered.Store(true)
	}
	picker, err := newKeyPicker(balanceLeastLoaded, keys)
	if err != nil {
		t.Fatal(err)
	}
	return &tier{priority: priority, upstreams: []*Upstream{u}, keys: [][]*poolKey{keys},
		pickers: []keyPicker{picker}, upSel: newSmoothWRR(1)}
}

// TestTierFallback checks when a request goes to a higher tier: only when no
// key of the lower tiers can serve it before its deadline; a lower tier that
// frees up within the wait budget is waited for.
func TestTierFallback(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		primary  limit.Limits
		fill     int           // requests taken on the primary key first
		wait     time.Duration // the request's max_wait
		retired  bool          // the primary key is retired
		wantTier string        // "" when the request waits
	}{
		{name: "primary has room", primary: limit.Limits{RPM: 60}, wait: time.Second, wantTier: "primary"},
		{name: "primary full beyond the deadline", primary: limit.Limits{RPM: 60}, fill: 1, wait: 10 * time.Millisecond, wantTier: "backup"},
		{name: "primary free within the wait", primary: limit.Limits{RPM: 60}, fill: 1, wait: 10 * time.Second},
		{name: "primary busy until a release", primary: limit.Limits{MaxConcurrent: 1}, fill: 1, wait: 10 * time.Millisecond},
		{name: "primary retired", primary: limit.Limits{RPM: 60}, retired: true, wait: 10 * time.Second, wantTier: "backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary := testTier(t, "primary", 0, tt.primary)
			backup := testTier(t, "backup", 1, limit.Limits{})
			for range tt.fill {
				if _, _, ok := primary.keys[0][0].limiter.Reserve(now, 0); !ok {
					t.Fatal("could not fill the primary key")
				}
			}
			if tt.retired {
				primary.keys[0][0].state.retire("test", now, time.Hour)
			}
			pr := &proxyRequest{
				rl:       &Relay{state: inMemory},
				client:   &Client{Name: "c", state: &clientState{}},
				req:      httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil),
				api:      &apiRequest{endpoint: "chat/completions"},
				route:    routeSet{tiers: []*tier{primary, backup}, eligible: [][]bool{{true}, {true}}},
				deadline: now.Add(tt.wait),
			}
			h, _ := pr.tryAcquire(now)
			defer h.cancel()
			got := ""
			if h != nil {
				got = h.key.upstream.Name
			}
			if got != tt.wantTier {
				t.Errorf("served by %q; want %q", got, tt.wantTier)
			}
		})
	}
}

// TestHold checks a hold's life: what it takes, that it ends once, and
// that cancel after settle gives nothing back twice.
func TestHold(t *testing.T) {
	now := time.Now()
	newKey := func(l limit.Limits, answered bool) *poolKey {
		k := &poolKey{id: "k", state: &keyState{}, limiter: limit.NewLimiter(l), unconfigured: l.RPM == 0 && l.TPM == 0}
		k.state.answered.Store(answered)
		return k
	}
	t.Run("cancel gives the request back", func(t *testing.T) {
		k := newKey(limit.Limits{MaxConcurrent: 1}, true)
		h, ok := reserve(inMemory, now, k, nil, 10)
		if !ok {
			t.Fatal("no room")
		}
		if _, ok := reserve(inMemory, now, k, nil, 10); ok {
			t.Fatal("a second request fits a key of one")
		}
		h.cancel()
		h.cancel() // once only
		if k.limiter.InFlight() != 0 {
			t.Errorf("in flight after cancel: %d", k.limiter.InFlight())
		}
		if _, ok := reserve(inMemory, now, k, nil, 10); !ok {
			t.Error("no room after cancel")
		}
	})
	t.Run("settle then cancel ends once", func(t *testing.T) {
		k := newKey(limit.Limits{TPM: 6000}, true)
		h, ok := reserve(inMemory, now, k, nil, 100)
		if !ok {
			t.Fatal("no room")
		}
		h.sent()
		h.settle(40)
		h.cancel()
		if k.limiter.InFlight() != 0 {
			t.Errorf("in flight after settle: %d", k.limiter.InFlight())
		}
	})
	t.Run("an unlearned key takes one request at a time", func(t *testing.T) {
		k := newKey(limit.Limits{}, false)
		h, ok := reserve(inMemory, now, k, nil, 1)
		if !ok {
			t.Fatal("no room")
		}
		if _, ok := reserve(inMemory, now, k, nil, 1); ok {
			t.Error("a second request while learning")
		}
		h.settle(1)
		if _, ok := reserve(inMemory, now, k, nil, 1); !ok {
			t.Error("the learning slot was not given back")
		}
	})
	t.Run("client limits are taken with the key's", func(t *testing.T) {
		k := newKey(limit.Limits{RPM: 600}, true)
		client := limit.NewLimiter(limit.Limits{MaxConcurrent: 1})
		h, ok := reserve(inMemory, now, k, client, 1)
		if !ok {
			t.Fatal("no room")
		}
		if _, ok := reserve(inMemory, now, k, client, 1); ok {
			t.Error("the client's concurrency was not held")
		}
		h.cancel()
		if client.InFlight() != 0 {
			t.Errorf("client in flight after cancel: %d", client.InFlight())
		}
	})
	t.Run("a retired key holds nothing", func(t *testing.T) {
		k := newKey(limit.Limits{}, true)
		k.state.retire("dead", now, time.Hour)
		if _, ok := reserve(inMemory, now, k, nil, 1); ok {
			t.Error("a retired key was reserved")
		}
	})
}

// TestBudgetReservation checks that concurrent requests cannot pass on the
// same remainder, that what is given back is available again, and that a
// new period starts afresh.
func TestBudgetReservation(t *testing.T) {
	day := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		spent  float64
		holds  []float64 // estimates reserved in turn
		want   []bool
		period string
	}{
		{"under budget", 0, []float64{0.4, 0.4}, []bool{true, true}, "daily"},
		{"the remainder goes once", 0, []float64{0.6, 0.6, 0.6}, []bool{true, true, false}, "daily"},
		{"spent", 1.0, []float64{0.01}, []bool{false}, "monthly"},
		{"almost spent admits one", 0.99, []float64{0.5, 0.5}, []bool{true, false}, "monthly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := &clientState{}
			if tt.spent > 0 {
				cs.addSpend(day, tt.spent)
			}
			for i, usd := range tt.holds {
				if got := cs.reserveSpend(day, tt.period, 1.0, usd); got != tt.want[i] {
					t.Errorf("reservation %d of $%.2f: %v; want %v", i, usd, got, tt.want[i])
				}
			}
		})
	}
	cs := &clientState{}
	if !cs.reserveSpend(day, "daily", 1.0, 1.0) || cs.reserveSpend(day, "daily", 1.0, 0.1) {
		t.Fatal("a reservation passed on a budget held whole")
	}
	cs.releaseSpend(1.0)
	if !cs.reserveSpend(day, "daily", 1.0, 1.0) {
		t.Error("a released reservation was not available again")
	}
	cs.releaseSpend(1.0)
	cs.addSpend(day, 1.0)
	if cs.reserveSpend(day, "daily", 1.0, 0.1) {
		t.Error("a spent daily budget admitted a request")
	}
	if !cs.reserveSpend(day.Add(24*time.Hour), "daily", 1.0, 0.1) {
		t.Error("the next day did not start afresh")
	}
}
