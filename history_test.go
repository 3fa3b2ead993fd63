package openairelay

import (
	"testing"
	"time"
)

func TestMinuteCounts(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name         string
		adds         []time.Duration // offsets from base, each one request of 10 tokens
		at           time.Duration
		reqs, tokens int64
	}{
		{"none", nil, 0, 0, 0},
		{"same second", []time.Duration{0, 0, 0}, 0, 3, 30},
		{"across the minute", []time.Duration{0, 30 * time.Second, 59 * time.Second}, 59 * time.Second, 3, 30},
		{"the oldest second has left", []time.Duration{0, 30 * time.Second}, 60 * time.Second, 1, 10},
		{"a slot reused a minute later", []time.Duration{0, 60 * time.Second}, 60 * time.Second, 1, 10},
		{"all gone", []time.Duration{0, time.Second}, 3 * time.Minute, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m minuteCounts
			for _, d := range tt.adds {
				m.add(base.Add(d), 1, 10)
			}
			r, k := m.lastMinute(base.Add(tt.at))
			if r != tt.reqs || k != tt.tokens {
				t.Errorf("lastMinute = %d requests, %d tokens; want %d, %d", r, k, tt.reqs, tt.tokens)
			}
		})
	}
}

// TestHistoryRing checks that samples are per-second differences of the
// traffic totals, oldest first, bounded by historyLen.
func TestHistoryRing(t *testing.T) {
	var h historyRing
	base := time.Unix(1_800_000_000, 0)
	var total historySample
	h.record(base, total, 10, 0) // the first only sets the totals
	if n := len(h.list()); n != 0 {
		t.Fatalf("%d samples after the first; want 0", n)
	}
	for i := 1; i <= historyLen+5; i++ {
		total.Outcomes[outcomeSuccess] += int64(i % 3)
		total.Outcomes[outcomeRateLimited]++
		total.Tokens += 100
		h.record(base.Add(time.Duration(i)*time.Second), total, 10, i)
	}
	s := h.list()
	if len(s) != historyLen {
		t.Fatalf("%d samples; want %d", len(s), historyLen)
	}
	for i, x := range s {
		want := int64(6 + i) // the first kept is i = 6
		if x.T != base.Unix()+want {
			t.Fatalf("sample %d at %d; want %d (oldest first)", i, x.T, base.Unix()+want)
		}
		if x.Outcomes[outcomeSuccess] != want%3 || x.Outcomes[outcomeRateLimited] != 1 || x.Tokens != 100 || x.Used != want%3+1 || x.Queue != int(want) || x.Capacity != 10 {
			t.Fatalf("sample %d: %+v", i, x)
		}
	}
}
