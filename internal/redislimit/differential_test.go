package redislimit

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// Limits whose costs are whole microseconds (60e6 µs a minute divides by
// each), so that memory mode and the store round identically and the
// differential test can demand equal states.
var (
	rpms = []int64{3000, 6000, 12000}
	tpms = []int64{300000, 600000, 1200000}
)

// dayOf is the UTC day number of Unix ns t.
func dayOf(t int64) int64 { return t / int64(24*time.Hour) }

// normalize makes states that behave alike compare equal: a tat in the
// past is a full bucket whatever its value (a memory ReserveAll that fails
// reserves and cancels on the limiters before the one without room, which
// leaves their tat at now), and counters of a past day are none.
func normalize(s limit.State, now int64) limit.State {
	s.At = 0
	s.Req.TAT = max(s.Req.TAT, now)
	s.Tok.TAT = max(s.Tok.TAT, now)
	if d := dayOf(now); s.Day < d {
		s.Day, s.RequestsToday, s.TokensToday = d, 0, 0
	}
	return s
}

// roundUp rounds Unix ns up to the µs, as the store keeps times.
func roundUp(ns int64) int64 { return usFromNs(ns) * 1000 }

// effective is what a limiter configured with conf and holding s enforces.
func effective(conf limit.Limits, s limit.State) limit.Limits {
	l := limit.NewLimiter(conf)
	l.SetState(s)
	return l.Limits()
}

// pair is one reservation made on both sides.
type pair struct {
	r    *Reservation
	m    limit.Multi
	ids  []string
	done bool
}

// TestDifferential applies one random sequence of operations to
// limit.Limiter in memory and to the store, driving memory with the times
// the store's replies carry, and demands the same decisions, retry times and
// states after every step.
func TestDifferential(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			seeds, steps := uint64(3), 800
			if testing.Short() {
				seeds, steps = 1, 400
			}
			for seed := range seeds {
				t.Run(fmt.Sprint(seed), func(t *testing.T) { differential(t, b, seed, steps) })
			}
		})
	}
}

func differential(t *testing.T, b backend, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 42))
	store := New(b.client(t), prefix(t))
	c := ctx(t, time.Minute)
	ids := []string{"key", "client"}
	conf := map[string]limit.Limits{
		"key":    {RPM: 6000, TPM: 600000, TPD: 100000, MaxConcurrent: 8},
		"client": {RPM: 12000, RPD: 40, MaxConcurrent: 6, Burst: 900 * time.Millisecond}, // TPM learned
	}
	mem := map[string]*limit.Limiter{}
	for _, id := range ids {
		mem[id] = limit.NewLimiter(conf[id])
	}
	var pairs []*pair
	var last time.Time
	counts := map[string]int{}

	check := func(step int, what string, touched []string, states []limit.State) {
		t.Helper()
		for i, id := range touched {
			now := states[i].At
			got, want := normalize(states[i], now), normalize(mem[id].State(), now)
			if got == want {
				continue
			}
			// A backlog converted to another rate is rounded up to the µs
			// in the store: the same up to that, memory takes the store's
			// state so that the sequence goes on from equal states.
			want.Req.TAT, want.Tok.TAT = roundUp(want.Req.TAT), roundUp(want.Tok.TAT)
			if got != want {
				t.Fatalf("step %d (%s) %s:\nredis  %+v\nmemory %+v", step, what, id, got, want)
			}
			mem[id].SetState(states[i])
			counts["rounded"]++
		}
		if len(states) > 0 {
			last = at(states[0])
		}
	}
	// Both sides start knowing the limits.
	for _, id := range ids {
		st, err := store.Raise(c, id, mem[id].Limits(), Raise{})
		if err != nil {
			t.Fatal(err)
		}
		check(-1, "init", []string{id}, []limit.State{st})
	}
	open := func() *pair {
		var live []*pair
		for _, p := range pairs {
			if !p.done {
				live = append(live, p)
			}
		}
		if len(live) == 0 {
			return nil
		}
		return live[rng.IntN(len(live))]
	}
	for step := range steps {
		switch k := rng.IntN(100); {
		case k < 35: // reserve
			var use []string
			switch rng.IntN(3) {
			case 0:
				use = []string{"key"}
			case 1:
				use = []string{"client"}
			default:
				use = []string{"key", "client"}
			}
			tokens := rng.Int64N(500)
			if rng.IntN(10) == 0 {
				tokens = 5000 + rng.Int64N(10000) // beyond a bucket of 10000 tokens: the debt rule
			}
			items := make([]Item, len(use))
			ls := make([]*limit.Limiter, len(use))
			for i, id := range use {
				items[i] = Item{ID: id, Limits: mem[id].Limits()}
				ls[i] = mem[id]
			}
			// A fifth are tokens alone, as within a WebSocket session.
			reserve, reserveAll, what := store.Reserve, limit.ReserveAll, "Reserve"
			if rng.IntN(5) == 0 {
				reserve, reserveAll, what = store.ReserveTokens, limit.ReserveAllTokens, "ReserveTokens"
			}
			r, states, retry, ok, err := reserve(c, tokens, items, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			m, mretry, mok := reserveAll(at(states[0]), tokens, ls...)
			if ok != mok || !retry.Equal(mretry) {
				t.Fatalf("step %d: %s(%d) on %v: redis %v %v, memory %v %v", step, what, tokens, use, ok, retry, mok, mretry)
			}
			if ok {
				pairs = append(pairs, &pair{r: r, m: m, ids: use})
				counts["reserved"]++
				if what == "ReserveTokens" {
					counts["reserved: tokens alone"]++
				}
			} else {
				counts["refused"]++
				if retry.IsZero() {
					counts["refused: concurrency"]++
				} else if retry.Sub(at(states[0])) > time.Hour {
					counts["refused: day"]++
				} else if st := states[0]; st.Cool > st.At {
					counts["refused: cooling"]++
				}
			}
			check(step, "reserve", use, states)
		case k < 45: // retime
			p := open()
			if p == nil {
				continue
			}
			states, err := store.Retime(c, p.r)
			if err != nil {
				t.Fatal(err)
			}
			if states == nil {
				continue // already sent: no round trip, nothing to compare
			}
			p.m.Retime(at(states[0]))
			check(step, "retime", p.ids, states)
		case k < 65: // settle
			p := open()
			if p == nil {
				continue
			}
			actual := rng.Int64N(1200)
			states, err := store.Settle(c, p.r, actual)
			if err != nil {
				t.Fatal(err)
			}
			p.m.Settle(at(states[0]), actual)
			p.done = true
			counts["settled"]++
			check(step, "settle", p.ids, states)
		case k < 73: // cancel
			p := open()
			if p == nil {
				continue
			}
			states, err := store.Cancel(c, p.r)
			if err != nil {
				t.Fatal(err)
			}
			p.m.Cancel(at(states[0]))
			p.done = true
			counts["cancelled"]++
			check(step, "cancel", p.ids, states)
		case k < 80: // learn from headers: a pull, maybe a learned limit
			id := ids[rng.IntN(len(ids))]
			h := http.Header{}
			lim := mem[id].Limits()
			h.Set("X-Ratelimit-Remaining-Requests", strconv.FormatInt(lim.RPM-rng.Int64N(10), 10))
			h.Set("X-Ratelimit-Reset-Requests", strconv.Itoa(rng.IntN(500))+"ms")
			// The remaining tokens are of the limit the headers give, if any.
			upTPM := lim.TPM
			if rng.IntN(3) == 0 {
				upTPM = tpms[rng.IntN(len(tpms))]
				h.Set("X-Ratelimit-Limit-Tokens", strconv.FormatInt(upTPM, 10))
			}
			h.Set("X-Ratelimit-Remaining-Tokens", strconv.FormatInt(max(upTPM-rng.Int64N(2000), 0), 10))
			h.Set("X-Ratelimit-Reset-Tokens", strconv.Itoa(rng.IntN(500))+"ms")
			asOf := last.Add(-time.Duration(rng.IntN(50)) * time.Millisecond)
			raise := mem[id].LearnRaise(asOf, last, h)
			lim = effective(conf[id], mem[id].State())
			if raise.LearnedTPM > 0 && conf[id].TPM == 0 {
				lim.TPM = raise.LearnedTPM
			}
			st, err := store.Raise(c, id, lim, raise)
			if err != nil {
				t.Fatal(err)
			}
			mem[id].LearnAsOf(asOf, at(st), h)
			check(step, "learn", []string{id}, []limit.State{st})
		case k < 82: // 429, rarely: each leaves the bucket empty at its end
			if rng.IntN(8) != 0 {
				continue
			}
			id := ids[rng.IntN(len(ids))]
			until := last.Add(time.Duration(rng.IntN(100)) * time.Millisecond)
			tokens := rng.Int64N(800)
			st, err := store.Raise(c, id, mem[id].Limits(), mem[id].ExhaustedRaise(until, tokens))
			if err != nil {
				t.Fatal(err)
			}
			mem[id].Exhausted(until, tokens)
			check(step, "exhausted", []string{id}, []limit.State{st})
		case k < 84: // lift
			id := ids[rng.IntN(len(ids))]
			st, err := store.Lift(c, id)
			if err != nil {
				t.Fatal(err)
			}
			mem[id].CoolDown(time.Time{})
			check(step, "lift", []string{id}, []limit.State{st})
		case k < 87: // rate change, as on a config reload
			id := ids[rng.IntN(len(ids))]
			nc := conf[id]
			nc.RPM = rpms[rng.IntN(len(rpms))]
			if id == "key" {
				nc.TPM = tpms[rng.IntN(len(tpms))]
			}
			conf[id] = nc
			st, err := store.Raise(c, id, effective(nc, mem[id].State()), Raise{})
			if err != nil {
				t.Fatal(err)
			}
			mem[id].SetLimitsAt(at(st), nc)
			check(step, "limits", []string{id}, []limit.State{st})
			counts["rate changes"]++
		default: // let the buckets refill
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		}
	}
	// A mirror loaded from the store reads as memory does.
	states, err := store.Load(c, ids)
	if err != nil {
		t.Fatal(err)
	}
	check(steps, "load", ids, states)
	now := at(states[0])
	for i, id := range ids {
		mirror := limit.NewLimiter(conf[id])
		mirror.SetState(states[i])
		if got, want := mirror.Status(now), mem[id].Status(now); got != want {
			t.Errorf("%s: mirror Status %+v, memory %+v", id, got, want)
		}
	}
	t.Logf("%v", counts)
	if counts["reserved"] == 0 || counts["refused"] == 0 {
		t.Errorf("the sequence should both reserve and refuse: %v", counts)
	}
}
