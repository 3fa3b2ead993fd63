package openairelay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The status page's charts and bars need a short history that the
// Prometheus metrics, which only count, do not keep: the process's traffic
// second by second over the last 15 minutes (history), and each key's
// requests and tokens over the last minute (minuteCounts). Both are bounded:
// historyLen samples in all, 60 slots per key.

// historyLen is how many one-second samples the history keeps.
const historyLen = 15 * 60

// traffic counts what the process did since it started; the sampler turns
// it into per-second rates.
var traffic struct {
	outcomes [outcomeCount]atomic.Int64 // upstream attempts by outcome
	tokens   atomic.Int64               // tokens the upstreams reported used
}

// outcomeCount is the number of outcomes, client_closed included.
const outcomeCount = int(outcomeNetwork) + 2

// historySample is one second of the process's traffic.
type historySample struct {
	T int64 `json:"t"` // Unix seconds
	// Outcomes are the upstream attempts of the second by outcome, in the
	// order of historyOutcomes.
	Outcomes [outcomeCount]int64 `json:"outcomes"`
	Tokens   int64               `json:"tokens"`
	// Capacity is the requests a second the keys in rotation allow (their
	// RPM over 60; keys without a known RPM count nothing); Used is the
	// attempts of the second.
	Capacity float64 `json:"capacity_rps"`
	Used     int64   `json:"used_rps"`
	Queue    int     `json:"queue"`
}

// historyOutcomes names the outcomes of a sample, in order.
var historyOutcomes = [outcomeCount]string{"success", "client_error", "rate_limited", "dead_key", "server_error", "network_error", "client_closed"}

// historyRing is the last historyLen samples.
type historyRing struct {
	mu      sync.Mutex
	samples [historyLen]historySample
	next    int
	n       int
	last    historySample // the totals at the latest sample
}

// history is the process's ring and its sampler's lifecycle: the sampler
// runs while any config is loaded.
var history struct {
	ring historyRing

	mu      sync.Mutex
	configs int
	stop    func()
}

// startHistory counts a config; the first starts the sampler.
func startHistory() {
	history.mu.Lock()
	defer history.mu.Unlock()
	history.configs++
	if history.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	history.stop = func() { cancel(); <-done }
	go sampleHistory(ctx, done)
}

// stopHistory uncounts a config; the last stops the sampler.
func stopHistory() {
	history.mu.Lock()
	history.configs = max(history.configs-1, 0)
	var stop func()
	if history.configs == 0 {
		stop, history.stop = history.stop, nil
	}
	history.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func sampleHistory(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	takeSample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			takeSample(now)
		}
	}
}

// takeSample records the second that ended at now.
func takeSample(now time.Time) {
	var total historySample
	for i := range total.Outcomes {
		total.Outcomes[i] = traffic.outcomes[i].Load()
	}
	total.Tokens = traffic.tokens.Load()
	history.ring.record(now, total, poolCapacity(now), queues.length())
}

// record adds the second that ended at now, from the traffic totals then.
func (h *historyRing) record(now time.Time, total historySample, capacity float64, queued int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.last.T == 0
	s := historySample{T: now.Unix(), Capacity: capacity, Queue: queued}
	if !first {
		for i := range s.Outcomes {
			s.Outcomes[i] = total.Outcomes[i] - h.last.Outcomes[i]
			s.Used += s.Outcomes[i]
		}
		s.Tokens = total.Tokens - h.last.Tokens
	}
	total.T = s.T
	h.last = total
	if first {
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % historyLen
	h.n = min(h.n+1, historyLen)
}

// historySamples returns the process's samples, oldest first.
func historySamples() []historySample { return history.ring.list() }

// list returns the samples, oldest first.
func (h *historyRing) list() []historySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]historySample, 0, h.n)
	start := (h.next - h.n + historyLen) % historyLen
	for i := range h.n {
		out = append(out, h.samples[(start+i)%historyLen])
	}
	return out
}

// poolCapacity is the requests a second the keys in rotation allow, each
// limiter counted once (keys of a limit group share one).
func poolCapacity(now time.Time) float64 {
	seen := make(map[any]bool)
	total := 0.0
	keyStates.Range(func(_, v any) bool {
		ks := v.(*keyState)
		info := ks.info()
		if info.limiter == nil || ks.retired() || seen[info.limiter] {
			return true
		}
		seen[info.limiter] = true
		if info.limiter.CoolingUntil().After(now) {
			return true
		}
		total += float64(info.limiter.Limits().RPM) / 60
		return true
	})
	return total
}

// minuteCounts counts a key's requests and tokens over the last minute,
// in one-second slots.
type minuteCounts struct {
	mu       sync.Mutex
	sec      [60]int64 // the Unix second each slot counts
	requests [60]int64
	tokens   [60]int64
}

func (m *minuteCounts) slot(now int64) int {
	i := int(now % 60)
	if m.sec[i] != now {
		m.sec[i], m.requests[i], m.tokens[i] = now, 0, 0
	}
	return i
}

// add counts requests and tokens at now.
func (m *minuteCounts) add(now time.Time, requests, tokens int64) {
	s := now.Unix()
	m.mu.Lock()
	i := m.slot(s)
	m.requests[i] += requests
	m.tokens[i] += tokens
	m.mu.Unlock()
}

// lastMinute returns the requests and tokens of the 60 seconds up to now.
func (m *minuteCounts) lastMinute(now time.Time) (requests, tokens int64) {
	s := now.Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.sec {
		if m.sec[i] > s-60 && m.sec[i] <= s {
			requests += m.requests[i]
			tokens += m.tokens[i]
		}
	}
	return requests, tokens
}
