package limit

import (
	"net/http"
	"testing"
	"time"
)

func TestParseResetDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1s", time.Second, true},
		{"6m0s", 6 * time.Minute, true},
		{"1.5s", 1500 * time.Millisecond, true},
		{"20ms", 20 * time.Millisecond, true},
		{"1m30.5s", 90*time.Second + 500*time.Millisecond, true},
		{"2h0m0s", 2 * time.Hour, true},
		{"0s", 0, true},
		{"59.8s", 59800 * time.Millisecond, true},
		{"7.66s", 7660 * time.Millisecond, true},
		{"2m59.56s", 2*time.Minute + 59560*time.Millisecond, true},
		{"1h2m3.004s", time.Hour + 2*time.Minute + 3004*time.Millisecond, true},
		{"250us", 250 * time.Microsecond, true},
		{"250µs", 250 * time.Microsecond, true},
		{"250μs", 250 * time.Microsecond, true},
		{"15ns", 15, true},
		{"1d", 24 * time.Hour, true},
		{".5s", 500 * time.Millisecond, true},
		{"12", 12 * time.Second, true},
		{"0.5", 500 * time.Millisecond, true},
		{"0", 0, true},
		{" 3s ", 3 * time.Second, true},
		{"", 0, false},
		{"   ", 0, false},
		{"s", 0, false},
		{".", 0, false},
		{"-1s", 0, false},
		{"+1s", 0, false},
		{"1x", 0, false},
		{"1m30", 0, false},
		{"1..5s", 0, false},
		{"1 s", 0, false},
		{"abc", 0, false},
		{"99999999999h", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseResetDuration(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseResetDuration(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		hdr  map[string]string
		want time.Duration // after t0
		ok   bool
	}{
		{"none", nil, 0, false},
		{"retry-after-ms", map[string]string{"retry-after-ms": "1500", "retry-after": "9"}, 1500 * time.Millisecond, true},
		{"retry-after-ms fraction", map[string]string{"retry-after-ms": "2.5"}, 2500 * time.Microsecond, true},
		{"bad retry-after-ms falls through", map[string]string{"retry-after-ms": "soon", "retry-after": "3"}, 3 * time.Second, true},
		{"retry-after seconds", map[string]string{"retry-after": "20"}, 20 * time.Second, true},
		{"retry-after fraction", map[string]string{"retry-after": "0.25"}, 250 * time.Millisecond, true},
		{"retry-after date", map[string]string{"retry-after": t0.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second, true},
		{"retry-after date passed", map[string]string{"retry-after": t0.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{"retry-after over resets", map[string]string{"retry-after": "1", "x-ratelimit-reset-tokens": "1m"}, time.Second, true},
		{"negative retry-after ignored", map[string]string{"retry-after": "-5"}, 0, false},
		{"garbage retry-after ignored", map[string]string{"retry-after": "tomorrow-ish", "x-ratelimit-reset-requests": "2s"}, 2 * time.Second, true},
		{"resets with unknown remaining: the later", map[string]string{
			"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "6m0s",
		}, 6 * time.Minute, true},
		{"only the exhausted dimension", map[string]string{
			"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
			"x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "6m0s",
		}, 2 * time.Second, true},
		{"tokens exhausted", map[string]string{
			"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "2s",
			"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s",
		}, 1500 * time.Millisecond, true},
		{"both exhausted: the later", map[string]string{
			"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
			"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s",
		}, 2 * time.Second, true},
		{"nothing exhausted", map[string]string{
			"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "2s",
			"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "1.5s",
		}, 0, false},
		{"unparsable reset ignored", map[string]string{"x-ratelimit-reset-requests": "later"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := RetryAfter(headers(tt.hdr), t0)
			if ok != tt.ok || (ok && !got.Equal(t0.Add(tt.want))) {
				t.Errorf("RetryAfter = %v, %v; want +%v, %v", describe(got), ok, tt.want, tt.ok)
			}
		})
	}
}

func TestLearnIgnoresJunk(t *testing.T) {
	tests := []struct {
		name string
		hdr  map[string]string
	}{
		{"empty", nil},
		{"unrelated", map[string]string{"content-type": "application/json"}},
		{"negative", map[string]string{"x-ratelimit-limit-requests": "-5", "x-ratelimit-remaining-requests": "-1"}},
		{"garbage", map[string]string{"x-ratelimit-limit-tokens": "lots", "x-ratelimit-remaining-tokens": "few", "x-ratelimit-reset-tokens": "soon"}},
		{"zero limit", map[string]string{"x-ratelimit-limit-requests": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(Limits{RPM: 600})
			l.Learn(t0, headers(tt.hdr))
			if got := l.Limits(); got != (Limits{RPM: 600, Burst: DefaultBurst}) {
				t.Errorf("Limits = %+v", got)
			}
			if s := l.Status(t0); s.RemainingRequests != 10 {
				t.Errorf("RemainingRequests = %d, want 10", s.RemainingRequests)
			}
		})
	}

	// Decimal counts, as some compatible APIs send, are read.
	l := NewLimiter(Limits{})
	l.Learn(t0, headers(map[string]string{"x-ratelimit-limit-requests": "600.0", "x-ratelimit-remaining-requests": "594.0"}))
	if s := l.Status(t0); s.Limits.RPM != 600 || s.RemainingRequests != 4 {
		t.Errorf("decimal headers: RPM %d, remaining %d; want 600, 4", s.Limits.RPM, s.RemainingRequests)
	}
}
