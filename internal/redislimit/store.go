package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/redis/go-redis/v9"
)

// stateLen is how many numbers a script replies per limiter state.
const stateLen = 16

// maxTokens caps the tokens of a request, so that day counters in Lua
// doubles stay exact.
const maxTokens = int64(1) << 50

// Store keeps limiters' states in Redis. It is safe for concurrent use.
type Store struct {
	c   redis.UniversalClient
	tag string // "{prefix}", the hash tag every key starts with

	base string // random, so that reservation ids of instances never collide
	seq  atomic.Uint64

	offset atomic.Int64 // Redis's clock minus ours, ns, as of the latest reply
}

// New returns a Store over c whose keys start with {prefix}.
func New(c redis.UniversalClient, prefix string) *Store {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Store{c: c, tag: "{" + prefix + "}", base: hex.EncodeToString(b[:])}
}

func (s *Store) limKey(id string) string   { return s.tag + ":lim:" + id }
func (s *Store) leaseKey(id string) string { return s.tag + ":lease:" + id }
func (s *Store) resKey(rid string) string  { return s.tag + ":res:" + rid }

// Offset is Redis's clock minus the local one, as of the latest reply (off
// by up to half a round trip). A mirror filled from States, whose times are
// Redis's, reads right at time.Now().Add(s.Offset()).
func (s *Store) Offset() time.Duration { return time.Duration(s.offset.Load()) }

// Item is one limiter of a reservation: its id and its limits in force
// (the configured ones with learned RPM and TPM filled in where none is
// configured, as limit.Limiter.Limits returns them).
type Item struct {
	ID     string
	Limits limit.Limits
}

// Reservation is what one successful Reserve took. Settle, Retime and
// Cancel it through the Store; it is not safe for concurrent use.
type Reservation struct {
	// ID names the reservation's leases and record.
	ID string
	// At is Redis's time when it was made.
	At time.Time
	// Tokens are the tokens reserved.
	Tokens int64

	ids  []string
	sent bool
	done bool
}

// usFromNs converts ns to µs, rounding up so that a floor or cost never
// shrinks; 0 and negatives are 0 (none).
func usFromNs(ns int64) int64 {
	if ns <= 0 {
		return 0
	}
	return (ns-1)/1000 + 1
}

// timeFromUs converts Unix µs to a Time; 0 is the zero Time.
func timeFromUs(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// limitArgs appends the six limit arguments of the scripts.
func limitArgs(args []any, l limit.Limits) []any {
	burst := l.Burst
	if burst <= 0 {
		burst = limit.DefaultBurst
	}
	return append(args, max(l.RPM, 0), max(l.TPM, 0), max(l.RPD, 0), max(l.TPD, 0), max(l.MaxConcurrent, 0), burst.Microseconds())
}

// ints reads a script's reply, an array of integers.
func ints(v any) ([]int64, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("redislimit: unexpected reply %T", v)
	}
	out := make([]int64, len(a))
	for i, x := range a {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("redislimit: unexpected reply element %T", x)
		}
		out[i] = n
	}
	return out, nil
}

// run runs a script and reads its integer reply, noting Redis's clock.
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) ([]int64, error) {
	v, err := sc.Run(ctx, s.c, keys, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("redislimit: %w", err)
	}
	return ints(v)
}

// states decodes n states from v.
func (s *Store) states(v []int64, n int) ([]limit.State, error) {
	if len(v) != n*stateLen {
		return nil, fmt.Errorf("redislimit: reply of %d numbers, want %d", len(v), n*stateLen)
	}
	out := make([]limit.State, n)
	for i := range out {
		x := v[i*stateLen:]
		out[i] = limit.State{
			At:            x[0] * 1000,
			Req:           limit.BucketState{Limit: x[1], TAT: x[2] * 1000, Sent: x[3] * 1000, Pending: x[4] * 1000},
			Tok:           limit.BucketState{Limit: x[5], TAT: x[6] * 1000, Sent: x[7] * 1000, Pending: x[8] * 1000},
			Day:           x[9],
			RequestsToday: x[10],
			TokensToday:   x[11],
			InFlight:      x[12],
			Cool:          x[13] * 1000,
			LearnedRPM:    x[14],
			LearnedTPM:    x[15],
		}
	}
	if n > 0 {
		s.offset.Store(out[0].At - time.Now().UnixNano())
	}
	return out, nil
}

// limiterKeys appends each id's lim and lease keys.
func (s *Store) limiterKeys(keys []string, ids []string) []string {
	for _, id := range ids {
		keys = append(keys, s.limKey(id), s.leaseKey(id))
	}
	return keys
}

// errNoItems is returned for a reservation on no limiter at all.
var errNoItems = errors.New("redislimit: no items")

// Reserve reserves one request and tokens on every item's limiter, all or
// nothing, as limit.ReserveAll does in memory, with a lease of leaseTTL on
// each limiter's concurrency. It returns every item's new State, in the
// order of items, whether or not the reservation succeeded. When ok is
// false nothing was taken and retryAt is the latest of the retry times of
// the limiters without room (see limit.Limiter.Reserve), in Redis's clock;
// the zero Time when only releases can help.
func (s *Store) Reserve(ctx context.Context, tokens int64, items []Item, leaseTTL time.Duration) (r *Reservation, states []limit.State, retryAt time.Time, ok bool, err error) {
	return s.reserve(ctx, tokens, items, leaseTTL, true)
}

// ReserveTokens reserves tokens alone, as limit.ReserveAllTokens does in
// memory: no request, no daily request, no lease on concurrency. It is
// otherwise Reserve, and ends the same way (Settle, Retime, Cancel).
func (s *Store) ReserveTokens(ctx context.Context, tokens int64, items []Item, leaseTTL time.Duration) (r *Reservation, states []limit.State, retryAt time.Time, ok bool, err error) {
	return s.reserve(ctx, tokens, items, leaseTTL, false)
}

func (s *Store) reserve(ctx context.Context, tokens int64, items []Item, leaseTTL time.Duration, request bool) (r *Reservation, states []limit.State, retryAt time.Time, ok bool, err error) {
	if len(items) == 0 {
		return nil, nil, time.Time{}, false, errNoItems
	}
	for i := range items {
		for j := range i {
			if items[i].ID == items[j].ID {
				return nil, nil, time.Time{}, false, fmt.Errorf("redislimit: limiter %q twice in one reservation", items[i].ID)
			}
		}
	}
	tokens = min(max(tokens, 0), maxTokens)
	rid := s.base + "." + strconv.FormatUint(s.seq.Add(1), 36)
	ids, keys, args := s.reserveCall(rid, tokens, items, leaseTTL, request)
	v, err := s.run(ctx, reserveScript, keys, args...)
	if err != nil {
		return nil, nil, time.Time{}, false, err
	}
	head := 3 + 5*len(items)
	if len(v) < head {
		return nil, nil, time.Time{}, false, fmt.Errorf("redislimit: short reply of %d numbers", len(v))
	}
	states, err = s.states(v[head:], len(items))
	if err != nil {
		return nil, nil, time.Time{}, false, err
	}
	if v[0] == 0 {
		return nil, states, timeFromUs(v[2]), false, nil
	}
	return &Reservation{ID: rid, At: time.UnixMicro(v[1]), Tokens: tokens, ids: ids}, states, time.Time{}, true, nil
}

// reserveCall returns the ids, keys and arguments of the reserve script.
func (s *Store) reserveCall(rid string, tokens int64, items []Item, leaseTTL time.Duration, request bool) (ids, keys []string, args []any) {
	ids = make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	keys = s.limiterKeys(append(make([]string, 0, 1+2*len(items)), s.resKey(rid)), ids)
	args = make([]any, 0, 4+6*len(items))
	kind := 0
	if request {
		kind = 1
	}
	args = append(args, rid, tokens, max(usFromNs(int64(leaseTTL)), 1), kind)
	for _, it := range items {
		args = limitArgs(args, it.Limits)
	}
	return ids, keys, args
}

// finish runs the finish script for r.
func (s *Store) finish(ctx context.Context, r *Reservation, what string, actual int64) ([]limit.State, error) {
	keys := s.limiterKeys(append(make([]string, 0, 1+2*len(r.ids)), s.resKey(r.ID)), r.ids)
	v, err := s.run(ctx, finishScript, keys, r.ID, what, min(max(actual, 0), maxTokens))
	if err != nil {
		return nil, err
	}
	if len(v) < 2 {
		return nil, fmt.Errorf("redislimit: short reply of %d numbers", len(v))
	}
	return s.states(v[2:], len(r.ids))
}

// Retime tells the store that r's request leaves for the upstream now, as
// limit.Reservation.Retime does. Only the first call has an effect, and none
// after Settle or Cancel; those return nil states without a round trip.
func (s *Store) Retime(ctx context.Context, r *Reservation) ([]limit.State, error) {
	if r == nil || r.done || r.sent {
		return nil, nil
	}
	st, err := s.finish(ctx, r, "retime", 0)
	if err == nil {
		r.sent = true
	}
	return st, err
}

// Settle corrects r's tokens to actual and releases its leases, as
// limit.Reservation.Settle does. Only the first Settle or Cancel has an
// effect (later ones return nil states without a round trip); after an
// error it may be called again.
func (s *Store) Settle(ctx context.Context, r *Reservation, actual int64) ([]limit.State, error) {
	if r == nil || r.done {
		return nil, nil
	}
	st, err := s.finish(ctx, r, "settle", actual)
	if err == nil {
		r.done = true
	}
	return st, err
}

// Cancel gives back everything r took, as limit.Reservation.Cancel does.
// Only the first Settle or Cancel has an effect.
func (s *Store) Cancel(ctx context.Context, r *Reservation) ([]limit.State, error) {
	if r == nil || r.done {
		return nil, nil
	}
	st, err := s.finish(ctx, r, "cancel", 0)
	if err == nil {
		r.done = true
	}
	return st, err
}

// Renew extends the leases of reservations still running to ttl from now,
// in one round trip for all. live reports, per reservation, whether it was
// still held; one that was not (settled, cancelled, or expired) stays gone.
func (s *Store) Renew(ctx context.Context, rs []*Reservation, ttl time.Duration) (live []bool, err error) {
	live = make([]bool, len(rs))
	var keys []string
	args := []any{max(usFromNs(int64(ttl)), 1)}
	var idx []int
	for i, r := range rs {
		if r == nil || r.done {
			continue
		}
		keys = append(keys, s.resKey(r.ID))
		for _, id := range r.ids {
			keys = append(keys, s.leaseKey(id))
		}
		args = append(args, r.ID, len(r.ids))
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return live, nil
	}
	v, err := s.run(ctx, renewScript, keys, args...)
	if err != nil {
		return nil, err
	}
	if len(v) != len(idx) {
		return nil, fmt.Errorf("redislimit: reply of %d numbers, want %d", len(v), len(idx))
	}
	for j, i := range idx {
		live[i] = v[j] == 1
	}
	return live, nil
}

// Raise is what only ever raises a limiter's state: see limit.Raise. Compute
// it on the limiter's mirror with limit.Limiter.LearnRaise or ExhaustedRaise
// and push it with Store.Raise. Its times are Unix ns, rounded up to the µs.
type Raise = limit.Raise

// Raise applies to at Redis's now on limiter id, whose limits in force are
// lim (with to's learned limits filled in, as the mirror has them after
// ApplyRaise): it first converts the buckets to lim's rates, then sets the
// learned limits, raises the bucket tats and the cool-down to at least
// to's. It returns the new State.
func (s *Store) Raise(ctx context.Context, id string, lim limit.Limits, to Raise) (limit.State, error) {
	args := limitArgs(make([]any, 0, 12), lim)
	args = append(args, max(to.LearnedRPM, 0), max(to.LearnedTPM, 0), usFromNs(to.ReqTAT), usFromNs(to.TokTAT), usFromNs(to.Cool), "raise")
	return s.one(ctx, raiseScript, id, args...)
}

// Lift ends limiter id's cool-down, as limit.Limiter.CoolDown of the zero
// Time does.
func (s *Store) Lift(ctx context.Context, id string) (limit.State, error) {
	return s.one(ctx, raiseScript, id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "lift")
}

// RestoreDaily loads persisted daily counters into limiter id with
// limit.Limiter.RestoreDaily's rule: a later day replaces, the same day
// takes the larger counts, an earlier day or a malformed state is ignored.
func (s *Store) RestoreDaily(ctx context.Context, id string, d limit.DailyState) (limit.State, error) {
	day, err := time.Parse("2006-01-02", d.Day)
	if err != nil {
		return limit.State{}, fmt.Errorf("redislimit: daily state: %w", err)
	}
	return s.one(ctx, restoreScript, id, day.Unix()/86400, max(d.Requests, 0), min(max(d.Tokens, 0), maxTokens))
}

// one runs a script on one limiter and decodes its state.
func (s *Store) one(ctx context.Context, sc *redis.Script, id string, args ...any) (limit.State, error) {
	v, err := s.run(ctx, sc, []string{s.limKey(id), s.leaseKey(id)}, args...)
	if err != nil {
		return limit.State{}, err
	}
	st, err := s.states(v, 1)
	if err != nil {
		return limit.State{}, err
	}
	return st[0], nil
}

// Load returns the states of the limiters ids, in one round trip, to
// refresh mirrors. A limiter Redis knows nothing of has the zero State
// (with At set): full buckets, nothing counted.
func (s *Store) Load(ctx context.Context, ids []string) ([]limit.State, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	v, err := s.run(ctx, loadScript, s.limiterKeys(make([]string, 0, 2*len(ids)), ids))
	if err != nil {
		return nil, err
	}
	return s.states(v, len(ids))
}
