package openairelay

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

func testKeys(weights ...int) []*poolKey {
	keys := make([]*poolKey, len(weights))
	for i, w := range weights {
		keys[i] = &poolKey{id: fmt.Sprintf("k%d", i), weight: w, limiter: limit.NewLimiter(limit.Limits{}), state: &keyState{}}
	}
	return keys
}

// TestPoliciesHonourWeights checks every policy's share of picks against
// the weights over many picks, for small and large pools.
func TestPoliciesHonourWeights(t *testing.T) {
	for _, policy := range []string{balanceLeastLoaded, balanceWeightedRR, balanceRandom} {
		for _, weights := range [][]int{{1, 1}, {5, 1, 1}, {3, 2, 1, 1, 1, 1, 1, 1, 1, 1}} {
			t.Run(fmt.Sprintf("%s/%v", policy, weights), func(t *testing.T) {
				keys := testKeys(weights...)
				p, err := newKeyPicker(policy, keys)
				if err != nil {
					t.Fatal(err)
				}
				const picks = 20000
				counts := map[*poolKey]int{}
				now := time.Now()
				for range picks {
					k := p.pick(now, func(*poolKey) bool { return true })
					counts[k]++
				}
				total := 0
				for _, w := range weights {
					total += w
				}
				for i, k := range keys {
					want := float64(weights[i]) / float64(total)
					got := float64(counts[k]) / picks
					if math.Abs(got-want) > 0.02 {
						t.Errorf("key %d: share %.3f; want %.3f", i, got, want)
					}
				}
			})
		}
	}
}

func TestSmoothWRRInterleaves(t *testing.T) {
	// nginx's smooth WRR, used between upstreams.
	s := newSmoothWRR(3)
	weights := []int{5, 1, 1}
	var seq []int
	for range 7 {
		seq = append(seq, s.pick(3, func(i int) int { return weights[i] }, func(int) bool { return true }))
	}
	if got := fmt.Sprint(seq); got != "[0 0 1 0 2 0 0]" {
		t.Errorf("sequence %s; want nginx's a a b a c a a", got)
	}
}

func TestWeightedRoundRobinInterleaves(t *testing.T) {
	keys := testKeys(5, 1, 1)
	p, _ := newKeyPicker(balanceWeightedRR, keys)
	var seq []string
	for range 14 {
		seq = append(seq, p.pick(time.Now(), func(*poolKey) bool { return true }).id)
	}
	// Every window of 7 picks holds 5 k0, 1 k1, 1 k2, and the light keys
	// never come twice in a row.
	for start := 0; start+7 <= len(seq); start += 7 {
		counts := map[string]int{}
		for _, id := range seq[start : start+7] {
			counts[id]++
		}
		if counts["k0"] != 5 || counts["k1"] != 1 || counts["k2"] != 1 {
			t.Errorf("window %v: %v", seq[start:start+7], counts)
		}
	}
	for i := 1; i < len(seq); i++ {
		if seq[i] != "k0" && seq[i-1] != "k0" {
			t.Errorf("light keys back to back in %v", seq)
		}
	}
}

// TestPoliciesSkipKeysWithoutRoom checks that a key refused by try is
// passed over and that nil comes back only when every key refuses.
func TestPoliciesSkipKeysWithoutRoom(t *testing.T) {
	for _, policy := range []string{balanceLeastLoaded, balanceWeightedRR, balanceRandom} {
		for _, n := range []int{3, 50} {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = 1
			}
			keys := testKeys(weights...)
			p, _ := newKeyPicker(policy, keys)
			only := keys[n-1]
			for range 100 {
				if k := p.pick(time.Now(), func(k *poolKey) bool { return k == only }); k != only {
					t.Fatalf("%s/%d: picked %v; want the only key with room", policy, n, k)
				}
			}
			if k := p.pick(time.Now(), func(*poolKey) bool { return false }); k != nil {
				t.Fatalf("%s/%d: picked %v with no room anywhere", policy, n, k.id)
			}
		}
	}
}

// TestLeastLoadedPrefersHeadroom checks that least_loaded sends more to the
// key with more room left.
func TestLeastLoadedPrefersHeadroom(t *testing.T) {
	for _, n := range []int{2, 40} {
		weights := make([]int, n)
		for i := range weights {
			weights[i] = 1
		}
		keys := testKeys(weights...)
		now := time.Now()
		// Half the keys are nearly exhausted.
		for i, k := range keys {
			k.limiter = limit.NewLimiter(limit.Limits{RPM: 600})
			if i%2 == 1 {
				for range 9 {
					k.limiter.Reserve(now, 0)
				}
			}
		}
		p, _ := newKeyPicker(balanceLeastLoaded, keys)
		fresh := 0
		for range 2000 {
			k := p.pick(now, func(*poolKey) bool { return true })
			for i, kk := range keys {
				if kk == k && i%2 == 0 {
					fresh++
				}
			}
		}
		if fresh < 1400 {
			t.Errorf("%d keys: %d of 2000 picks went to keys with room; want most", n, fresh)
		}
	}
}

// BenchmarkSelection measures a pick with a reservation, as a request makes
// it, for pools of 10, 100 and 1,000 keys, serially and from many goroutines.
func BenchmarkSelection(b *testing.B) {
	for _, policy := range []string{balanceLeastLoaded, balanceRandom, balanceWeightedRR} {
		for _, n := range []int{10, 100, 1000} {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = 1 + i%3
			}
			keys := testKeys(weights...)
			for _, k := range keys {
				k.limiter = limit.NewLimiter(limit.Limits{RPM: 1 << 40, TPM: 1 << 40})
			}
			p, _ := newKeyPicker(policy, keys)
			try := func(k *poolKey) bool {
				r, _, ok := k.limiter.Reserve(time.Now(), 100)
				if ok {
					r.Settle(time.Now(), 100)
				}
				return ok
			}
			b.Run(fmt.Sprintf("%s/keys=%d", policy, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					p.pick(time.Now(), try)
				}
			})
			b.Run(fmt.Sprintf("%s/keys=%d/parallel", policy, n), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						p.pick(time.Now(), try)
					}
				})
			})
		}
	}
}

// TestLeastLoadedSharesFollowWeightsExactly checks that keys of equal
// headroom get their weights' shares to within a request or two over 1,000
// picks, where a random draw by weight is off by several points.
func TestLeastLoadedSharesFollowWeightsExactly(t *testing.T) {
	keys := testKeys(7, 2, 1)
	p, err := newKeyPicker(balanceLeastLoaded, keys)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[*poolKey]int{}
	now := time.Now()
	for range 1000 {
		counts[p.pick(now, func(*poolKey) bool { return true })]++
	}
	for i, want := range []int{700, 200, 100} {
		if got := counts[keys[i]]; got < want-2 || got > want+2 {
			t.Errorf("key %d (weight %d): %d picks of 1000; want %d", i, keys[i].weight, got, want)
		}
	}
	// A key without room is passed over and keeps its credit.
	counts = map[*poolKey]int{}
	for n := range 100 {
		k := p.pick(now, func(k *poolKey) bool { return k != keys[0] || n%2 == 0 })
		counts[k]++
	}
	if counts[keys[0]] == 0 || counts[keys[1]] == 0 {
		t.Errorf("picks with key 0 full half the time: %v", counts)
	}
}
