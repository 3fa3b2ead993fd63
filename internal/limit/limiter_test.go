package limit

import (
	"encoding/json"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"
)

// t0 is noon UTC, twelve hours before a day rolls over.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// never stands for a zero retryAt in the tables.
const never = time.Duration(math.MinInt64)

type opKind int

const (
	reserve   opKind = iota // n reservations of tokens, each expected to give ok/retry
	settle                  // settle reservation idx to tokens
	cancel                  // cancel reservation idx
	learn                   // Learn(hdr)
	cool                    // CoolDown(t0 + retry), or of the zero Time for never
	setLimits               // SetLimits(lim)
	learnAsOf               // LearnAsOf(t0+asOf, hdr)
	exhausted               // Exhausted(t0+retry, tokens)
)

// op is one step of a limiter scenario at time t0+at. Successful reservations
// are numbered in order, for settle and cancel.
type op struct {
	kind   opKind
	at     time.Duration
	tokens int64
	n      int // repeat count for reserve; 0 means 1
	idx    int
	hdr    map[string]string
	asOf   time.Duration
	lim    Limits
	ok     bool
	retry  time.Duration // expected retryAt - t0 when !ok; never for the zero Time
}

func headers(kv map[string]string) http.Header {
	h := make(http.Header, len(kv))
	for k, v := range kv {
		h.Set(k, v)
	}
	return h
}

func runOps(t *testing.T, l *Limiter, ops []op) []Reservation {
	t.Helper()
	var rs []Reservation
	for i, o := range ops {
		now := t0.Add(o.at)
		switch o.kind {
		case reserve:
			for j := range max(o.n, 1) {
				r, retryAt, ok := l.Reserve(now, o.tokens)
				if ok != o.ok {
					t.Fatalf("op %d.%d: Reserve(+%v, %d) ok = %v, want %v (retryAt %v)", i, j, o.at, o.tokens, ok, o.ok, retryAt.Sub(t0))
				}
				if ok {
					if !retryAt.IsZero() {
						t.Fatalf("op %d.%d: ok with retryAt %v", i, j, retryAt)
					}
					rs = append(rs, r)
					continue
				}
				switch {
				case o.retry == never && !retryAt.IsZero():
					t.Fatalf("op %d.%d: retryAt = +%v, want zero", i, j, retryAt.Sub(t0))
				case o.retry != never && !retryAt.Equal(t0.Add(o.retry)):
					t.Fatalf("op %d.%d: retryAt = %v, want +%v", i, j, describe(retryAt), o.retry)
				}
				if got, ok := l.Check(now, o.tokens); ok || !got.Equal(retryAt) {
					t.Fatalf("op %d.%d: Check = %v, %v; Reserve said %v", i, j, describe(got), ok, describe(retryAt))
				}
			}
		case settle:
			rs[o.idx].Settle(now, o.tokens)
		case cancel:
			rs[o.idx].Cancel(now)
		case learn:
			l.Learn(now, headers(o.hdr))
		case learnAsOf:
			l.LearnAsOf(t0.Add(o.asOf), now, headers(o.hdr))
		case exhausted:
			l.Exhausted(t0.Add(o.retry), o.tokens)
		case cool:
			if o.retry == never {
				l.CoolDown(time.Time{})
				break
			}
			l.CoolDown(t0.Add(o.retry))
		case setLimits:
			l.SetLimits(o.lim)
		}
	}
	return rs
}

func describe(t time.Time) string {
	if t.IsZero() {
		return "zero"
	}
	return "+" + t.Sub(t0).String()
}

func TestLimiterScenarios(t *testing.T) {
	const ms = time.Millisecond
	toMidnight := 12 * time.Hour
	tests := []struct {
		name string
		lim  Limits
		ops  []op
	}{
		{"unlimited", Limits{}, []op{
			{kind: reserve, n: 1000, tokens: 1e6, ok: true},
		}},
		{"rpm 60 holds one request", Limits{RPM: 60}, []op{
			{kind: reserve, ok: true},
			{kind: reserve, retry: time.Second},
			{kind: reserve, at: 999 * ms, retry: time.Second},
			{kind: reserve, at: time.Second, ok: true},
		}},
		{"rpm 600 holds one second's worth", Limits{RPM: 600}, []op{
			{kind: reserve, n: 10, ok: true},
			{kind: reserve, retry: 100 * ms},
			{kind: reserve, at: 100 * ms, ok: true},
			{kind: reserve, at: 100 * ms, retry: 200 * ms},
		}},
		{"refill stops at the burst", Limits{RPM: 600}, []op{
			{kind: reserve, n: 10, ok: true},
			{kind: reserve, at: time.Hour, n: 10, ok: true},
			{kind: reserve, at: time.Hour, retry: time.Hour + 100*ms},
		}},
		{"burst 10s", Limits{RPM: 60, Burst: 10 * time.Second}, []op{
			{kind: reserve, n: 10, ok: true},
			{kind: reserve, retry: time.Second},
		}},
		{"bucket holds at least one request", Limits{RPM: 6}, []op{
			{kind: reserve, ok: true},
			{kind: reserve, retry: 10 * time.Second},
			{kind: reserve, at: 10 * time.Second, ok: true},
		}},
		{"tpm bucket", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 60, ok: true},
			{kind: reserve, tokens: 50, retry: 100 * ms},
			{kind: reserve, at: 100 * ms, tokens: 50, ok: true},
			{kind: reserve, at: 100 * ms, tokens: 0, ok: true},
		}},
		{"big request leaves a full bucket in debt", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 1000, ok: true},
			{kind: reserve, tokens: 1, retry: 9010 * ms},
			{kind: reserve, at: 9010 * ms, tokens: 1, ok: true},
			{kind: reserve, at: 9010 * ms, tokens: 1000, retry: 10010 * ms},
			{kind: reserve, at: 10010 * ms, tokens: 1000, ok: true},
		}},
		{"big request waits for a full bucket", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 50, ok: true},
			{kind: reserve, tokens: 1000, retry: 500 * ms},
			{kind: reserve, at: 499 * ms, tokens: 1000, retry: 500 * ms},
			{kind: reserve, at: 500 * ms, tokens: 1000, ok: true},
		}},
		{"tightest dimension decides", Limits{RPM: 60, TPM: 6000}, []op{
			{kind: reserve, tokens: 10, ok: true},
			{kind: reserve, tokens: 10, retry: time.Second},
			{kind: reserve, at: time.Second, tokens: 200, ok: true},
			{kind: reserve, at: time.Second, tokens: 1, retry: 2010 * ms},
		}},
		{"settle down gives tokens back", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 100, ok: true},
			{kind: reserve, tokens: 1, retry: 10 * ms},
			{kind: settle, idx: 0, tokens: 40},
			{kind: reserve, tokens: 60, ok: true},
			{kind: reserve, tokens: 1, retry: 10 * ms},
		}},
		{"settle up takes more", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 100, ok: true},
			{kind: settle, idx: 0, tokens: 300},
			{kind: reserve, tokens: 1, retry: 2010 * ms},
		}},
		{"settle up long after takes from now", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 100, ok: true},
			{kind: settle, at: time.Minute, idx: 0, tokens: 150},
			{kind: reserve, at: time.Minute, tokens: 51, retry: time.Minute + 10*ms},
			{kind: reserve, at: time.Minute, tokens: 50, ok: true},
		}},
		{"settle twice is a no-op", Limits{TPM: 6000}, []op{
			{kind: reserve, tokens: 100, ok: true},
			{kind: settle, idx: 0, tokens: 0},
			{kind: settle, idx: 0, tokens: 1000},
			{kind: cancel, idx: 0},
			{kind: reserve, tokens: 100, ok: true},
			{kind: reserve, tokens: 1, retry: 10 * ms},
		}},
		{"cancel gives everything back", Limits{RPM: 60, TPM: 6000, RPD: 1, TPD: 100, MaxConcurrent: 1}, []op{
			{kind: reserve, tokens: 100, ok: true},
			{kind: reserve, tokens: 1, retry: never},
			{kind: cancel, idx: 0},
			{kind: reserve, tokens: 100, ok: true},
		}},
		{"max concurrent", Limits{MaxConcurrent: 2}, []op{
			{kind: reserve, n: 2, ok: true},
			{kind: reserve, retry: never},
			{kind: settle, idx: 1},
			{kind: reserve, ok: true},
			{kind: reserve, retry: never},
		}},
		{"rpd rolls over at UTC midnight", Limits{RPD: 2}, []op{
			{kind: reserve, n: 2, ok: true},
			{kind: reserve, retry: toMidnight},
			{kind: reserve, at: toMidnight - 1, retry: toMidnight},
			{kind: reserve, at: toMidnight, n: 2, ok: true},
			{kind: reserve, at: toMidnight, retry: toMidnight + 24*time.Hour},
		}},
		{"tpd", Limits{TPD: 1000}, []op{
			{kind: reserve, tokens: 600, ok: true},
			{kind: reserve, tokens: 500, retry: toMidnight},
			{kind: reserve, tokens: 400, ok: true},
			{kind: reserve, tokens: 0, ok: true},
			{kind: reserve, tokens: 1, retry: toMidnight},
		}},
		{"request bigger than tpd passes an untouched day", Limits{TPD: 1000}, []op{
			{kind: reserve, tokens: 5000, ok: true},
			{kind: reserve, tokens: 1, retry: toMidnight},
			{kind: reserve, at: toMidnight, tokens: 1, ok: true},
			{kind: reserve, at: toMidnight, tokens: 5000, retry: toMidnight + 24*time.Hour},
		}},
		{"settle counts on the day reserved", Limits{TPD: 1000}, []op{
			{kind: reserve, tokens: 100, ok: true},
			{kind: settle, idx: 0, tokens: 900},
			{kind: reserve, tokens: 101, retry: toMidnight},
			{kind: reserve, tokens: 100, ok: true},
			{kind: reserve, at: toMidnight, tokens: 900, ok: true},
			{kind: settle, at: toMidnight, idx: 1, tokens: 0}, // yesterday's: today is untouched
			{kind: reserve, at: toMidnight, tokens: 101, retry: toMidnight + 24*time.Hour},
		}},
		{"cool down", Limits{}, []op{
			{kind: cool, retry: 5 * time.Second},
			{kind: reserve, retry: 5 * time.Second},
			{kind: cool, retry: 2 * time.Second}, // only ever extends
			{kind: reserve, at: 4 * time.Second, retry: 5 * time.Second},
			{kind: reserve, at: 5 * time.Second, ok: true},
		}},
		{"cool down lifted", Limits{}, []op{
			{kind: cool, retry: 5 * time.Second},
			{kind: cool, retry: never},
			{kind: reserve, ok: true},
		}},
		// OpenAI reports the minute's allowance: after one request at 600
		// RPM, 599 remain and the reset is 100ms, while it enforces over a
		// second (10 requests). What the minute lacks is the backlog.
		{"learns limits when none configured", Limits{}, []op{
			{kind: learn, hdr: map[string]string{
				"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "60000",
				"x-ratelimit-remaining-requests": "599", "x-ratelimit-remaining-tokens": "59990",
				"x-ratelimit-reset-requests": "100ms", "x-ratelimit-reset-tokens": "10ms",
			}},
			{kind: reserve, n: 9, ok: true},
			{kind: reserve, retry: 100 * ms},
		}},
		{"configured limit wins over learned", Limits{RPM: 60}, []op{
			{kind: learn, hdr: map[string]string{"x-ratelimit-limit-requests": "600"}},
			{kind: reserve, ok: true},
			{kind: reserve, retry: time.Second},
		}},
		{"remaining pulls the bucket down", Limits{TPM: 60000}, []op{
			{kind: learn, hdr: map[string]string{
				"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "59200", "x-ratelimit-reset-tokens": "800ms",
			}},
			{kind: reserve, tokens: 201, retry: ms},
			{kind: reserve, tokens: 200, ok: true},
		}},
		{"remaining never pulls up", Limits{TPM: 60000}, []op{
			{kind: reserve, tokens: 900, ok: true},
			{kind: learn, hdr: map[string]string{"x-ratelimit-remaining-tokens": "59500", "x-ratelimit-reset-tokens": "500ms"}},
			{kind: reserve, tokens: 101, retry: ms},
			{kind: reserve, tokens: 100, ok: true},
		}},
		{"a whole minute's allowance changes nothing", Limits{RPM: 600}, []op{
			{kind: learn, hdr: map[string]string{"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "600", "x-ratelimit-reset-requests": "0s"}},
			{kind: reserve, n: 10, ok: true},
		}},
		{"remaining requests without a limit header", Limits{RPM: 600}, []op{
			{kind: learn, hdr: map[string]string{"x-ratelimit-remaining-requests": "597"}},
			{kind: reserve, n: 7, ok: true},
			{kind: reserve, retry: 100 * ms},
		}},
		{"a later reset slows recovery", Limits{TPM: 60000}, []op{
			{kind: learn, hdr: map[string]string{
				"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "59000", "x-ratelimit-reset-tokens": "2s",
			}},
			{kind: reserve, tokens: 1, retry: 1001 * ms},
			{kind: reserve, at: 2 * time.Second, tokens: 1000, ok: true},
		}},
		{"a faster upstream does not raise the level", Limits{TPM: 60000}, []op{
			{kind: learn, hdr: map[string]string{
				"x-ratelimit-limit-tokens": "120000", "x-ratelimit-remaining-tokens": "119000", "x-ratelimit-reset-tokens": "500ms",
			}},
			{kind: reserve, tokens: 1, retry: ms},
		}},
		// The headers describe the key when the request arrived: the
		// upstream has refilled since.
		{"headers count from the request's arrival", Limits{RPM: 600}, []op{
			{kind: learnAsOf, at: 500 * ms, asOf: 0, hdr: map[string]string{
				"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590", "x-ratelimit-reset-requests": "1s",
			}},
			{kind: reserve, at: 500 * ms, n: 5, ok: true},
			{kind: reserve, at: 500 * ms, retry: 600 * ms},
		}},
		// After a 429 the upstream's bucket is empty: when the cool-down
		// ends, one request fits, and the next a refill later.
		{"a cool-down after a 429 ends on one request", Limits{RPM: 600}, []op{
			{kind: exhausted, retry: 2 * time.Second},
			{kind: reserve, at: time.Second, retry: 2 * time.Second},
			{kind: reserve, at: 2 * time.Second, ok: true},
			{kind: reserve, at: 2 * time.Second, retry: 2100 * ms},
		}},
		{"a cool-down after a 429 leaves the request's tokens", Limits{TPM: 60000}, []op{
			{kind: exhausted, retry: time.Second, tokens: 300},
			{kind: reserve, at: time.Second, tokens: 301, retry: 1001 * ms},
			{kind: reserve, at: time.Second, tokens: 300, ok: true},
		}},
		// A burst short of UpstreamWindow keeps the difference as margin
		// for arrival jitter: as unused capacity while the burst holds
		// several requests, as spacing when a request costs more.
		{"a short burst keeps its margin as capacity", Limits{RPM: 600, Burst: 900 * ms}, []op{
			{kind: reserve, n: 9, ok: true},
			{kind: reserve, retry: 100 * ms},
		}},
		{"a short burst spaces slow requests", Limits{RPM: 60, Burst: 900 * ms}, []op{
			{kind: reserve, ok: true},
			{kind: reserve, at: time.Second, retry: 1100 * ms},
			{kind: reserve, at: 1100 * ms, ok: true},
			{kind: reserve, at: 2100 * ms, retry: 2200 * ms},
		}},
		{"a short burst spaces large requests", Limits{TPM: 60000, Burst: 900 * ms}, []op{
			{kind: reserve, tokens: 2000, ok: true},
			{kind: reserve, at: 2 * time.Second, tokens: 2000, retry: 2100 * ms},
			{kind: reserve, at: 2100 * ms, tokens: 2000, ok: true},
		}},
		{"a reservation takes at most the minute's allowance", Limits{TPM: 60000}, []op{
			{kind: reserve, tokens: 1 << 50, ok: true},
			{kind: reserve, tokens: 1, retry: 59*time.Second + ms},
			{kind: settle, idx: 0, tokens: 500},
			{kind: reserve, tokens: 500, ok: true},
		}},
		{"remaining without any limit is ignored", Limits{}, []op{
			{kind: learn, hdr: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m"}},
			{kind: reserve, ok: true},
		}},
		{"a new learned limit keeps the deficit", Limits{}, []op{
			{kind: learn, hdr: map[string]string{"x-ratelimit-limit-requests": "600"}},
			{kind: reserve, n: 10, ok: true},
			{kind: learn, hdr: map[string]string{"x-ratelimit-limit-requests": "1200"}},
			{kind: reserve, n: 10, ok: true},
			{kind: reserve, retry: 50 * ms},
		}},
		{"reload keeps consumed state", Limits{RPM: 600, RPD: 15}, []op{
			{kind: reserve, n: 10, ok: true},
			{kind: setLimits, lim: Limits{RPM: 1200, RPD: 15}},
			{kind: reserve, n: 5, ok: true},
			{kind: reserve, retry: toMidnight},
			{kind: setLimits, lim: Limits{RPM: 1200}},
			{kind: reserve, n: 5, ok: true},
			{kind: reserve, retry: 50 * ms},
		}},
		{"reload to unlimited and back starts full", Limits{RPM: 60}, []op{
			{kind: reserve, ok: true},
			{kind: setLimits, lim: Limits{}},
			{kind: reserve, n: 5, ok: true},
			{kind: setLimits, lim: Limits{RPM: 60}},
			{kind: reserve, ok: true},
			{kind: reserve, retry: time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runOps(t, NewLimiter(tt.lim), tt.ops)
		})
	}
}

func TestLimits(t *testing.T) {
	l := NewLimiter(Limits{TPM: 1000, RPD: 5})
	l.Learn(t0, headers(map[string]string{"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "90000"}))
	want := Limits{RPM: 500, TPM: 1000, RPD: 5, Burst: DefaultBurst}
	if got := l.Limits(); got != want {
		t.Errorf("Limits() = %+v, want %+v", got, want)
	}
	s := l.Status(t0)
	if s.Learned != (Limits{RPM: 500, TPM: 90000}) {
		t.Errorf("Status.Learned = %+v", s.Learned)
	}
	if s.Configured != (Limits{TPM: 1000, RPD: 5}) {
		t.Errorf("Status.Configured = %+v", s.Configured)
	}
}

func TestStatus(t *testing.T) {
	l := NewLimiter(Limits{RPM: 600, TPM: 60000, RPD: 100, MaxConcurrent: 4})
	r, _, ok := l.Reserve(t0, 250)
	if !ok {
		t.Fatal("Reserve failed")
	}
	l.CoolDown(t0.Add(time.Second))
	got := l.Status(t0.Add(50 * time.Millisecond))
	want := Status{
		Limits:                 Limits{RPM: 600, TPM: 60000, RPD: 100, MaxConcurrent: 4, Burst: time.Second},
		Configured:             Limits{RPM: 600, TPM: 60000, RPD: 100, MaxConcurrent: 4},
		RemainingRequests:      9,
		RemainingTokens:        800,
		ResetRequests:          50 * time.Millisecond,
		ResetTokens:            200 * time.Millisecond,
		RequestsToday:          1,
		TokensToday:            250,
		RemainingRequestsToday: 99,
		RemainingTokensToday:   Unlimited,
		InFlight:               1,
		CoolingUntil:           t0.Add(time.Second),
	}
	if !got.CoolingUntil.Equal(want.CoolingUntil) {
		t.Errorf("CoolingUntil = %v, want %v", got.CoolingUntil, want.CoolingUntil)
	}
	got.CoolingUntil = want.CoolingUntil
	if got != want {
		t.Errorf("Status =\n%+v\nwant\n%+v", got, want)
	}
	if n := l.InFlight(); n != 1 {
		t.Errorf("InFlight = %d, want 1", n)
	}
	r.Settle(t0, 100)
	if n := l.InFlight(); n != 0 {
		t.Errorf("InFlight after Settle = %d, want 0", n)
	}
	if s := l.Status(t0.Add(2 * time.Second)); !s.CoolingUntil.IsZero() || s.TokensToday != 100 || s.RemainingTokens != 1000 {
		t.Errorf("Status later = %+v", s)
	}
	if s := l.Status(t0.Add(24 * time.Hour)); s.RequestsToday != 0 || s.RemainingRequestsToday != 100 {
		t.Errorf("Status next day = %+v", s)
	}
	if _, err := json.Marshal(got); err != nil {
		t.Errorf("Status does not marshal: %v", err)
	}
}

func TestHeadroom(t *testing.T) {
	tests := []struct {
		name   string
		lim    Limits
		tokens []int64 // reservations made at t0
		at     time.Duration
		cool   bool
		want   float64
	}{
		{"unlimited", Limits{}, []int64{1000}, 0, false, 1},
		{"rpm half used", Limits{RPM: 600}, []int64{0, 0, 0, 0, 0}, 0, false, 0.5},
		{"rpm refilled", Limits{RPM: 600}, []int64{0, 0, 0, 0, 0}, time.Second, false, 1},
		{"tpm tightest", Limits{RPM: 600, TPM: 6000}, []int64{75}, 0, false, 0.25},
		{"debt is zero", Limits{TPM: 6000}, []int64{500}, 0, false, 0},
		{"rpd", Limits{RPD: 10}, []int64{0, 0}, 0, false, 0.8},
		{"rpd next day", Limits{RPD: 10}, []int64{0, 0}, 24 * time.Hour, false, 1},
		{"tpd", Limits{TPD: 1000}, []int64{100}, 0, false, 0.9},
		{"concurrency", Limits{MaxConcurrent: 4}, []int64{0, 0, 0}, 0, false, 0.25},
		{"cooling", Limits{}, nil, 0, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.lim)
			for _, n := range tt.tokens {
				if _, _, ok := l.Reserve(t0, n); !ok {
					t.Fatalf("Reserve(%d) failed", n)
				}
			}
			if tt.cool {
				l.CoolDown(t0.Add(time.Minute))
			}
			if got := l.Headroom(t0.Add(tt.at)); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Headroom = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDailyState(t *testing.T) {
	l := NewLimiter(Limits{RPD: 10, TPD: 1000})
	for range 3 {
		r, _, ok := l.Reserve(t0, 100)
		if !ok {
			t.Fatal("Reserve failed")
		}
		r.Settle(t0, 50)
	}
	snap := l.DailySnapshot()
	if want := (DailyState{Day: "2025-03-01", Requests: 3, Tokens: 150}); snap != want {
		t.Fatalf("DailySnapshot = %+v, want %+v", snap, want)
	}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var back DailyState
	if err := json.Unmarshal(b, &back); err != nil || back != snap {
		t.Fatalf("JSON round trip: %s -> %+v, %v", b, back, err)
	}

	tests := []struct {
		name  string
		state DailyState
		want  DailyState // snapshot after restoring into a limiter that served one 10-token request at t0
	}{
		{"same day takes the larger", DailyState{Day: "2025-03-01", Requests: 3, Tokens: 5}, DailyState{Day: "2025-03-01", Requests: 3, Tokens: 10}},
		{"later day replaces", DailyState{Day: "2025-03-02", Requests: 2, Tokens: 5}, DailyState{Day: "2025-03-02", Requests: 2, Tokens: 5}},
		{"earlier day is ignored", DailyState{Day: "2025-02-28", Requests: 9, Tokens: 900}, DailyState{Day: "2025-03-01", Requests: 1, Tokens: 10}},
		{"malformed is ignored", DailyState{Day: "yesterday", Requests: 9}, DailyState{Day: "2025-03-01", Requests: 1, Tokens: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(Limits{})
			r, _, _ := l.Reserve(t0, 10)
			r.Settle(t0, 10)
			l.RestoreDaily(tt.state)
			if got := l.DailySnapshot(); got != tt.want {
				t.Errorf("after RestoreDaily: %+v, want %+v", got, tt.want)
			}
		})
	}

	// A restored count limits the rest of the day, and not the next.
	l = NewLimiter(Limits{RPD: 10})
	l.RestoreDaily(snap)
	l.RestoreDaily(snap)
	for range 7 {
		if _, _, ok := l.Reserve(t0.Add(time.Hour), 0); !ok {
			t.Fatal("Reserve within the restored day's allowance failed")
		}
	}
	if _, _, ok := l.Reserve(t0.Add(time.Hour), 0); ok {
		t.Fatal("Reserve beyond the restored day's allowance succeeded")
	}
	if _, _, ok := l.Reserve(t0.Add(12*time.Hour), 0); !ok {
		t.Fatal("Reserve on the next day failed")
	}
}

func TestReserveAll(t *testing.T) {
	key := NewLimiter(Limits{RPM: 600, TPM: 60000})
	group := NewLimiter(Limits{TPM: 6000, MaxConcurrent: 1})
	client := NewLimiter(Limits{RPM: 60})
	before := []Status{key.Status(t0), group.Status(t0), client.Status(t0)}

	m, retryAt, ok := ReserveAll(t0, 100, key, nil, group, client)
	if !ok {
		t.Fatalf("first ReserveAll failed, retryAt %v", describe(retryAt))
	}
	// group is at MaxConcurrent (zero retry time), client's bucket is empty (1s):
	// the latest of the two, and nothing left taken on key.
	mid := key.Status(t0)
	_, retryAt, ok = ReserveAll(t0, 100, key, group, client)
	if ok || !retryAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("second ReserveAll = %v, %v; want false, +1s", ok, describe(retryAt))
	}
	if got := key.Status(t0); got != mid {
		t.Errorf("failed ReserveAll changed key:\n%+v\nwant\n%+v", got, mid)
	}

	m.Cancel(t0)
	m.Cancel(t0) // no-op
	for i, l := range []*Limiter{key, group, client} {
		if got := l.Status(t0); got != before[i] {
			t.Errorf("limiter %d after Cancel:\n%+v\nwant\n%+v", i, got, before[i])
		}
	}

	m, _, ok = ReserveAll(t0, 100, key, group, client)
	if !ok {
		t.Fatal("ReserveAll after Cancel failed")
	}
	m.Settle(t0, 40)
	for i, l := range []*Limiter{key, group, client} {
		if s := l.Status(t0); s.InFlight != 0 || s.TokensToday != 40 {
			t.Errorf("limiter %d after Settle: %+v", i, s)
		}
	}

	// More limiters than a Multi holds inline.
	ls := make([]*Limiter, 7)
	for i := range ls {
		ls[i] = NewLimiter(Limits{MaxConcurrent: 1})
	}
	m, _, ok = ReserveAll(t0, 1, ls...)
	if !ok {
		t.Fatal("ReserveAll of 7 failed")
	}
	if _, _, ok := ReserveAll(t0, 1, ls[6]); ok {
		t.Fatal("7th limiter not taken")
	}
	m.Settle(t0, 1)
	for i, l := range ls {
		if n := l.InFlight(); n != 0 {
			t.Errorf("limiter %d InFlight = %d after Settle", i, n)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	key := NewLimiter(Limits{RPM: 1e9, TPM: 1e12, RPD: 1e12, TPD: 1e15, MaxConcurrent: 100})
	group := NewLimiter(Limits{TPM: 1e12})
	client := NewLimiter(Limits{RPM: 1e9})
	h := headers(map[string]string{
		"x-ratelimit-limit-requests": "1000000000", "x-ratelimit-remaining-requests": "999999999",
		"x-ratelimit-reset-requests": "6ms", "x-ratelimit-limit-tokens": "1000000000000",
		"x-ratelimit-remaining-tokens": "999999999000", "x-ratelimit-reset-tokens": "1m30.5s",
	})
	now := t0
	tests := []struct {
		name string
		f    func()
	}{
		{"Reserve+Settle", func() {
			r, _, _ := key.Reserve(now, 100)
			r.Settle(now, 50)
		}},
		{"ReserveAll+Settle", func() {
			m, _, _ := ReserveAll(now, 100, key, group, client)
			m.Settle(now, 50)
		}},
		{"Learn", func() { key.Learn(now, h) }},
		{"Headroom", func() { key.Headroom(now) }},
		{"Status", func() { key.Status(now) }},
		{"ParseResetDuration", func() { ParseResetDuration("1m30.5s") }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tt.name, n)
		}
	}
}

// TestConcurrent hammers one limiter from many goroutines; run with -race.
// Whatever interleaving happens, every reservation is settled exactly once,
// so nothing stays in flight and the daily counts add up.
func TestConcurrent(t *testing.T) {
	l := NewLimiter(Limits{RPM: 6000, TPM: 600000, RPD: 1e9, MaxConcurrent: 8})
	other := NewLimiter(Limits{RPM: 60000})
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		reqs, tokens   int64
		workers, iters = 8, 500
	)
	h := headers(map[string]string{"x-ratelimit-limit-requests": "7000", "x-ratelimit-remaining-requests": "6990", "x-ratelimit-reset-requests": "100ms"})
	for w := range workers {
		wg.Go(func() {
			var myReqs, myTokens int64
			for i := range iters {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				m, _, ok := ReserveAll(now, int64(10+w), l, other)
				if !ok {
					l.Headroom(now)
					continue
				}
				switch i % 4 {
				case 0:
					m.Cancel(now)
				case 1:
					l.Learn(now, h)
					fallthrough
				default:
					m.Settle(now, int64(i%30))
					myReqs++
					myTokens += int64(i % 30)
				}
				if i%50 == 0 {
					l.SetLimits(Limits{RPM: 6000 + int64(i), TPM: 600000, RPD: 1e9, MaxConcurrent: 8})
					l.Status(now)
				}
			}
			mu.Lock()
			reqs += myReqs
			tokens += myTokens
			mu.Unlock()
		})
	}
	wg.Wait()
	if n := l.InFlight(); n != 0 {
		t.Errorf("InFlight = %d after all settled", n)
	}
	if s := l.Status(t0); s.RequestsToday != reqs || s.TokensToday != tokens {
		t.Errorf("today = %d requests, %d tokens; want %d, %d", s.RequestsToday, s.TokensToday, reqs, tokens)
	}
}

func TestRetimeMovesConsumptionToSendTime(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := NewLimiter(Limits{RPM: 600}) // 10 a second, 10 at once
	var rs []Reservation
	for range 10 {
		r, _, ok := l.Reserve(t0, 0)
		if !ok {
			t.Fatal("a full bucket refused")
		}
		rs = append(rs, r)
	}
	// At t0+500ms five more would fit; but the ten were only sent at
	// t0+400ms, so the upstream has refilled one, not five.
	for i := range rs {
		rs[i].Retime(t0.Add(400 * time.Millisecond))
	}
	n := 0
	for range 10 {
		if _, _, ok := l.Reserve(t0.Add(500*time.Millisecond), 0); ok {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d reservations fit 100ms after the sends; want 1", n)
	}
	// Retiming a settled reservation changes nothing.
	rs[0].Settle(t0, 0)
	rs[0].Retime(t0.Add(time.Hour))
	if _, _, ok := l.Reserve(t0.Add(2*time.Second), 0); !ok {
		t.Error("a retimed settled reservation still holds capacity")
	}
}

// TestReserveTokens checks that tokens alone take no request, daily request
// or concurrency slot, and give back only what they took.
func TestReserveTokens(t *testing.T) {
	l := NewLimiter(Limits{RPM: 60, RPD: 1, TPD: 1000, MaxConcurrent: 1})
	session, _, ok := l.Reserve(t0, 0)
	if !ok {
		t.Fatal("session Reserve failed")
	}
	if _, _, ok := l.Reserve(t0, 0); ok {
		t.Fatal("second request admitted past RPM, RPD and MaxConcurrent")
	}
	turn, retryAt, ok := l.ReserveTokens(t0, 600)
	if !ok {
		t.Fatalf("ReserveTokens inside the session failed, retryAt %v", describe(retryAt))
	}
	check := func(step string, inFlight, reqs, toks int64) {
		t.Helper()
		s := l.Status(t0)
		if s.InFlight != inFlight || s.RequestsToday != reqs || s.TokensToday != toks {
			t.Errorf("%s: in flight %d, requests %d, tokens %d; want %d, %d, %d", step, s.InFlight, s.RequestsToday, s.TokensToday, inFlight, reqs, toks)
		}
	}
	check("after ReserveTokens", 1, 1, 600)

	midnight := t0.Add(12 * time.Hour)
	if _, at, ok := l.ReserveTokens(t0, 500); ok || !at.Equal(midnight) {
		t.Fatalf("ReserveTokens past TPD = %v, %v; want false at midnight", ok, describe(at))
	}
	if at, ok := l.CheckTokens(t0, 500); ok || !at.Equal(midnight) {
		t.Fatalf("CheckTokens past TPD = %v, %v; want false at midnight", ok, describe(at))
	}
	turn.Cancel(t0)
	check("after Cancel", 1, 1, 0)

	turn, _, ok = l.ReserveTokens(t0, 300)
	if !ok {
		t.Fatal("ReserveTokens after Cancel failed")
	}
	turn.Settle(t0, 200)
	check("after Settle", 1, 1, 200)

	l.CoolDown(t0.Add(5 * time.Second))
	if at, ok := l.CheckTokens(t0, 1); ok || !at.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("CheckTokens while cooling = %v, %v; want false at +5s", ok, describe(at))
	}
	l.CoolDown(time.Time{})
	session.Settle(t0, 0)
	check("after the session", 0, 1, 200)

	// All or nothing across limiters, as ReserveAll.
	full := NewLimiter(Limits{TPD: 100})
	other := NewLimiter(Limits{TPD: 1000})
	if _, _, ok := full.ReserveTokens(t0, 100); !ok {
		t.Fatal("filling TPD failed")
	}
	if _, at, ok := ReserveAllTokens(t0, 10, other, full); ok || !at.Equal(midnight) {
		t.Fatalf("ReserveAllTokens = %v, %v; want false at midnight", ok, describe(at))
	}
	if s := other.Status(t0); s.TokensToday != 0 || s.InFlight != 0 {
		t.Errorf("failed ReserveAllTokens left %+v on the other limiter", s)
	}
	m, _, ok := ReserveAllTokens(t0, 10, other)
	if !ok {
		t.Fatal("ReserveAllTokens failed")
	}
	m.Settle(t0, 20)
	if s := other.Status(t0); s.TokensToday != 20 || s.RequestsToday != 0 || s.InFlight != 0 {
		t.Errorf("after ReserveAllTokens settled: %+v", s)
	}
}
