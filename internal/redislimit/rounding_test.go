package redislimit

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestCostRounding compares the cost the scripts compute in Lua doubles
// with limit's in int64 nanoseconds, for awkward and very large limits: the
// script's is the Go cost rounded up to the µs, exactly while n·60e6 stays
// below 2^53 and no more than 2µs above beyond (where Go's cost is itself
// computed in floating point).
func TestCostRounding(t *testing.T) {
	srv := redistest.Start(t)
	s := New(closing(t, redis.NewClient(&redis.Options{Addr: srv.Addr()})), prefix(t))
	c := ctx(t, 30*time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	tpms := []int64{7, 13, 60001, 999983, 150_000_000, 999_999_937, 1 << 40}
	for i, tpm := range tpms {
		for j := range 20 {
			n := 1 + rng.Int64N(tpm)
			if j == 0 {
				n = tpm // a whole minute
			}
			lim := limit.Limits{TPM: tpm}
			id := "k" + string(rune('a'+i)) + string(rune('a'+j))
			_, states, _, ok, err := s.Reserve(c, n, []Item{{ID: id, Limits: lim}}, time.Minute)
			if err != nil || !ok {
				t.Fatalf("Reserve(%d) at %d TPM: %v %v", n, tpm, ok, err)
			}
			m := limit.NewLimiter(lim)
			if _, _, ok := m.Reserve(time.Unix(0, states[0].At), n); !ok {
				t.Fatalf("memory refused %d at %d TPM", n, tpm)
			}
			got, want := states[0].Tok.Pending, roundUp(m.State().Tok.Pending)
			exact := float64(n)*60e6 < 1<<53
			if (exact && got != want) || got < want || got > want+2000 {
				t.Errorf("%d tokens at %d TPM: store %dns, memory rounded up %dns", n, tpm, got, want)
			}
		}
	}
}
