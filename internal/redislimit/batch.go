package redislimit

import (
	"context"
	"fmt"
	"strings"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/redis/go-redis/v9"
)

// Op is one step of a reservation's later life, for Finish.
type Op struct {
	R *Reservation
	// What is "retime", "settle" or "cancel".
	What string
	// Actual is the tokens used, for "settle".
	Actual int64
}

// Result is what one Op of Finish did: the new states of its reservation's
// limiters (nil when the op had nothing to do), or its error.
type Result struct {
	States []limit.State
	Err    error
}

// Finish runs ops in order in one pipeline (one round trip for all), as
// Retime, Settle and Cancel would one by one: each takes effect once, and an
// op that failed may be passed again. Ops of one reservation must keep their
// order (a retime before its settle), which one pipeline does.
func (s *Store) Finish(ctx context.Context, ops []Op) []Result {
	out := make([]Result, len(ops))
	todo := make([]int, 0, len(ops))
	for i, op := range ops {
		if op.R == nil || op.R.done || (op.What == "retime" && op.R.sent) {
			continue
		}
		todo = append(todo, i)
	}
	for attempt := 0; len(todo) > 0 && attempt < 2; attempt++ {
		cmds := make([]*redis.Cmd, len(todo))
		_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range todo {
				op := ops[i]
				keys := s.limiterKeys(append(make([]string, 0, 1+2*len(op.R.ids)), s.resKey(op.R.ID)), op.R.ids)
				cmds[j] = finishScript.EvalSha(ctx, p, keys, op.R.ID, op.What, min(max(op.Actual, 0), maxTokens))
			}
			return nil
		})
		var again []int
		for j, i := range todo {
			v, err := cmds[j].Result()
			if err != nil && attempt == 0 && strings.HasPrefix(err.Error(), "NOSCRIPT") {
				again = append(again, i)
				continue
			}
			out[i] = s.finished(ops[i], v, err)
		}
		if len(again) > 0 {
			if err := finishScript.Load(ctx, s.c).Err(); err != nil {
				for _, i := range again {
					out[i].Err = fmt.Errorf("redislimit: %w", err)
				}
				return out
			}
		}
		todo = again
	}
	return out
}

// finished reads one finish reply and marks the reservation.
func (s *Store) finished(op Op, v any, err error) Result {
	if err != nil {
		return Result{Err: fmt.Errorf("redislimit: %w", err)}
	}
	n, err := ints(v)
	if err != nil {
		return Result{Err: err}
	}
	if len(n) < 2 {
		return Result{Err: fmt.Errorf("redislimit: short reply of %d numbers", len(n))}
	}
	st, err := s.states(n[2:], len(op.R.ids))
	if err != nil {
		return Result{Err: err}
	}
	if op.What == "retime" {
		op.R.sent = true
	} else {
		op.R.done = true
	}
	return Result{States: st}
}

// IDs are the limiters the reservation holds, in the order of its items.
func (r *Reservation) IDs() []string { return r.ids }
