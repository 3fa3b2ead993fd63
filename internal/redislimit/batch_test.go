package redislimit

import (
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestFinishAsOneByOne checks that a pipelined Finish leaves the limiters
// as the same ops one by one do, that each op takes effect once, and that
// a script Redis lost (a restart) is loaded again.
func TestFinishAsOneByOne(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			c := ctx(t, 20*time.Second)
			lim := limit.Limits{RPM: 600, TPM: 60000, MaxConcurrent: 10}
			run := func(pipelined bool) limit.State {
				s := New(b.client(t), prefix(t))
				items := []Item{{ID: "k", Limits: lim}, {ID: "c", Limits: lim}}
				var rs []*Reservation
				for range 4 {
					r, _, _, ok, err := s.Reserve(c, 100, items, time.Minute)
					if err != nil || !ok {
						t.Fatalf("reserve: %v %v", ok, err)
					}
					rs = append(rs, r)
				}
				ops := []Op{
					{R: rs[0], What: "retime"}, {R: rs[0], What: "settle", Actual: 40},
					{R: rs[1], What: "cancel"},
					{R: rs[2], What: "settle", Actual: 250}, {R: rs[2], What: "settle", Actual: 999}, // once
					{R: rs[3], What: "retime"}, {R: rs[3], What: "retime"},
				}
				if pipelined {
					for i, res := range s.Finish(c, ops) {
						if res.Err != nil {
							t.Fatalf("op %d: %v", i, res.Err)
						}
					}
				} else {
					for _, op := range ops {
						var err error
						switch op.What {
						case "retime":
							_, err = s.Retime(c, op.R)
						case "settle":
							_, err = s.Settle(c, op.R, op.Actual)
						case "cancel":
							_, err = s.Cancel(c, op.R)
						}
						if err != nil {
							t.Fatal(err)
						}
					}
				}
				st, err := s.Load(c, []string{"k"})
				if err != nil {
					t.Fatal(err)
				}
				return st[0]
			}
			one, piped := run(false), run(true)
			if one.InFlight != 1 || piped.InFlight != 1 {
				t.Fatalf("in flight: one by one %d, pipelined %d; want 1 (only the last is open)", one.InFlight, piped.InFlight)
			}
			if one.TokensToday != piped.TokensToday || one.RequestsToday != piped.RequestsToday {
				t.Fatalf("day counters: one by one %d/%d, pipelined %d/%d", one.RequestsToday, one.TokensToday, piped.RequestsToday, piped.TokensToday)
			}
			if want := int64(40 + 250 + 100); piped.TokensToday != want {
				t.Fatalf("tokens today %d, want %d", piped.TokensToday, want)
			}
		})
	}
}

// TestFinishReloadsScripts checks Finish after Redis lost its scripts.
func TestFinishReloadsScripts(t *testing.T) {
	srv := redistest.Start(t)
	c := ctx(t, 10*time.Second)
	cl := closing(t, redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true}))
	s := New(cl, prefix(t))
	r, _, _, ok, err := s.Reserve(c, 10, []Item{{ID: "k", Limits: limit.Limits{RPM: 60}}}, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := cl.ScriptFlush(c).Err(); err != nil {
		t.Fatal(err)
	}
	res := s.Finish(c, []Op{{R: r, What: "settle", Actual: 5}})
	if res[0].Err != nil || len(res[0].States) != 1 || res[0].States[0].InFlight != 0 {
		t.Fatalf("after SCRIPT FLUSH: %+v", res[0])
	}
}
