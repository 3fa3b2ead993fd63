package openairelay

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Selection is two-level: an upstream is chosen among the eligible upstreams
// of a tier by upstream weight (smooth weighted round robin: there are few
// upstreams), then a key of that upstream by the balance policy. An
// upstream's share of traffic is thus its weight however many keys it has,
// and a key's share within it follows its weight.
//
// A policy offers keys to try, which reserves the request's estimated cost
// on the key if it has room now and reports whether it did. A policy never
// looks at every key when it need not: least_loaded and weighted_random
// sample, so a pick costs the same with 10 keys or 10,000 while most keys
// have room, and fall back to a scan only when the samples had none;
// weighted_round_robin keeps its keys in a heap by turn.

// Balance policies.
const (
	balanceLeastLoaded = "least_loaded"
	balanceWeightedRR  = "weighted_round_robin"
	balanceRandom      = "weighted_random"
)

// keyPicker chooses among the keys of one upstream.
type keyPicker interface {
	pick(now time.Time, try func(*poolKey) bool) *poolKey
}

// Interface guards.
var (
	_ keyPicker = (*leastLoaded)(nil)
	_ keyPicker = (*weightedRandom)(nil)
	_ keyPicker = (*weightedRoundRobin)(nil)
)

func newKeyPicker(policy string, keys []*poolKey) (keyPicker, error) {
	switch policy {
	case "", balanceLeastLoaded:
		return newLeastLoaded(keys), nil
	case balanceRandom:
		return &weightedRandom{weighted: newWeighted(keys)}, nil
	case balanceWeightedRR:
		return newWeightedRoundRobin(keys), nil
	}
	return nil, fmt.Errorf("unknown balance policy %q (want %s, %s or %s)", policy, balanceLeastLoaded, balanceWeightedRR, balanceRandom)
}

// weighted draws keys with probability proportional to weight in O(log n).
type weighted struct {
	keys   []*poolKey
	cumsum []int // cumsum[i] is the sum of the weights of keys[0..i]
}

func newWeighted(keys []*poolKey) weighted {
	w := weighted{keys: keys, cumsum: make([]int, len(keys))}
	total := 0
	for i, k := range keys {
		total += k.weight
		w.cumsum[i] = total
	}
	return w
}

func (w *weighted) draw() *poolKey {
	r := rand.IntN(w.cumsum[len(w.cumsum)-1])
	return w.keys[sort.SearchInts(w.cumsum, r+1)]
}

// scan offers every key once, from a random start so that scans from many
// requests do not all land on the first keys.
func (w *weighted) scan(try func(*poolKey) bool) *poolKey {
	n := len(w.keys)
	start := rand.IntN(n)
	for i := range n {
		if k := w.keys[(start+i)%n]; try(k) {
			return k
		}
	}
	return nil
}

// samples is how many draws a sampling policy makes before it scans.
const samples = 3

// weightedRandom offers keys drawn by weight.
type weightedRandom struct{ weighted }

func (p *weightedRandom) pick(_ time.Time, try func(*poolKey) bool) *poolKey {
	for range samples {
		if k := p.draw(); try(k) {
			return k
		}
	}
	return p.scan(try)
}

// leastLoaded spreads requests by weight × remaining headroom: a key with
// twice the weight, or twice the room left, gets twice the share. Small
// pools give each key exactly that share, interleaved, by smooth weighted
// round robin over the scores (keys of equal headroom get their weights'
// shares to within a request, where a random draw would be off by several
// points over a thousand requests); large ones draw two keys by weight and
// offer first the one with more headroom (the "power of two choices", which
// evens the load as well as a full comparison at constant cost).
type leastLoaded struct {
	weighted
	mu      sync.Mutex
	current []float64 // smooth round robin credit of each key, for small pools
}

func newLeastLoaded(keys []*poolKey) *leastLoaded {
	return &leastLoaded{weighted: newWeighted(keys), current: make([]float64, len(keys))}
}

// exactBelow is the pool size under which least_loaded weighs every key.
const exactBelow = 8

func (p *leastLoaded) pick(now time.Time, try func(*poolKey) bool) *poolKey {
	if len(p.keys) < exactBelow {
		return p.pickExact(now, try)
	}
	for range samples {
		a, b := p.draw(), p.draw()
		if b.limiter.Headroom(now) > a.limiter.Headroom(now) {
			a, b = b, a
		}
		if try(a) {
			return a
		}
		if b != a && try(b) {
			return b
		}
	}
	return p.scan(try)
}

// pickExact is smooth weighted round robin over weight × headroom: every
// key's credit grows by its score, keys are offered by credit, highest
// first, and the one that takes the request pays the total back.
func (p *leastLoaded) pickExact(now time.Time, try func(*poolKey) bool) *poolKey {
	var scoresBuf [exactBelow]float64
	scores := scoresBuf[:len(p.keys)]
	total := 0.0
	for i, k := range p.keys {
		s := float64(k.weight) * k.limiter.Headroom(now)
		if s <= 0 {
			s = 1e-9 // no headroom by the buckets' reckoning; try it last
		}
		scores[i] = s
		total += s
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range scores {
		p.current[i] += s
	}
	var offered [exactBelow]bool
	for range p.keys {
		best := -1
		for i := range p.keys {
			if !offered[i] && (best < 0 || p.current[i] > p.current[best]) {
				best = i
			}
		}
		offered[best] = true
		if try(p.keys[best]) {
			p.current[best] -= total
			return p.keys[best]
		}
	}
	// No key had room: the round did not happen.
	for i, s := range scores {
		p.current[i] -= s
	}
	return nil
}

// weightedRoundRobin gives keys turns in proportion to their weights,
// interleaved, as earliest-deadline-first over virtual time: a key of weight
// w is due every 1/w, and the pick is the key due first that has room. Keys
// are kept in a heap by when they are due, so a pick costs O(log n) while the
// key due first has room; keys without room are passed over (and keep their
// turn) at O(log n) each.
type weightedRoundRobin struct {
	mu    sync.Mutex
	queue wrrHeap
}

type wrrEntry struct {
	key  *poolKey
	due  float64 // virtual time of the key's next turn
	step float64 // 1 / weight
	seq  int     // ties go to the key configured first
}

type wrrHeap []*wrrEntry

func (h wrrHeap) less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}

func (h wrrHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			return
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

func (h wrrHeap) down(i int) {
	for {
		least, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h.less(l, least) {
			least = l
		}
		if r < len(h) && h.less(r, least) {
			least = r
		}
		if least == i {
			return
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
}

func (h *wrrHeap) push(e *wrrEntry) {
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

func (h *wrrHeap) pop() *wrrEntry {
	old := *h
	e := old[0]
	last := len(old) - 1
	old[0] = old[last]
	*h = old[:last]
	h.down(0)
	return e
}

func newWeightedRoundRobin(keys []*poolKey) *weightedRoundRobin {
	p := &weightedRoundRobin{queue: make(wrrHeap, 0, len(keys))}
	for i, k := range keys {
		step := 1 / float64(k.weight)
		// Each key starts at its own phase within its first step (spread by
		// the golden ratio), so that keys of equal weight do not fall due
		// together and come back to back.
		_, phase := math.Modf(0.5 + float64(i)*0.6180339887498949)
		p.queue.push(&wrrEntry{key: k, due: step * phase, step: step, seq: i})
	}
	return p
}

func (p *weightedRoundRobin) pick(_ time.Time, try func(*poolKey) bool) *poolKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	var passed [8]*wrrEntry
	skipped := passed[:0]
	defer func() {
		for _, e := range skipped {
			p.queue.push(e)
		}
	}()
	for len(p.queue) > 0 {
		e := p.queue.pop()
		if try(e.key) {
			e.due += e.step
			p.queue.push(e)
			return e.key
		}
		skipped = append(skipped, e)
	}
	return nil
}

// smoothWRR is nginx's smooth weighted round robin: each pick adds every
// eligible item's weight to its running score, takes the highest score and
// subtracts the total from it. Picks interleave (weights 5,1,1 give
// a a b a c a a) instead of arriving in runs.
type smoothWRR struct {
	mu      sync.Mutex
	current []int
}

func newSmoothWRR(n int) *smoothWRR {
	return &smoothWRR{current: make([]int, n)}
}

// pick returns the index of the chosen item among the n items for which
// eligible is true, or -1 if none is.
func (s *smoothWRR) pick(n int, weight func(int) int, eligible func(int) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	best, total := -1, 0
	for i := 0; i < n; i++ {
		if !eligible(i) {
			continue
		}
		w := weight(i)
		s.current[i] += w
		total += w
		if best < 0 || s.current[i] > s.current[best] {
			best = i
		}
	}
	if best >= 0 {
		s.current[best] -= total
	}
	return best
}
