package openairelay

import "sync"

// Selection is two-level: an upstream is chosen among the eligible upstreams
// of a tier by upstream weight, then a key among that upstream's available
// keys by key weight. An upstream's share of traffic is thus its weight,
// however many keys it has, and a key's share within it is its weight.

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
