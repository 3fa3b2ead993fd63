// Package redislimit keeps the state of limit.Limiter in Redis, so that
// several relay instances enforce each upstream key's and client's limits
// together exactly as one instance does in memory.
//
// # Keys
//
// Every key of a Store starts with the same hash tag, {prefix}, so that one
// script can touch a key's and a client's limiters atomically on Redis
// Cluster too (all of a Store's keys live in one slot):
//
//	{prefix}:lim:<id>    hash: one limiter's State (buckets, day counters,
//	                     cool-down, learned limits), expiring two days after
//	                     its last write (past any tat or cool-down)
//	{prefix}:lease:<id>  sorted set: the limiter's requests in flight, one
//	                     member per reservation scored by its expiry
//	{prefix}:res:<rid>   hash: what one reservation took from each limiter,
//	                     expiring with its leases
//
// # Semantics
//
// Lua scripts implement limit.Limiter's rules (GCRA buckets with the debt
// rule, price, capping, the upstream model of sent and pending costs, the
// conversion of a backlog on a rate change, day counters, cool-down) and
// limit.ReserveAll's all-or-nothing reservation over several limiters. The
// differences from memory mode:
//
//   - Time is Redis's clock (TIME), so that instances with skewed clocks
//     agree, and it is kept in microseconds: Lua numbers are doubles, exact
//     to 2^53, which Unix microseconds are and Unix nanoseconds are not. Costs
//     are rounded up to whole microseconds, and a converted backlog and the
//     floors of a Raise too, so rounding never admits more than the limit.
//     Burst is rounded down to the microsecond. limit.State keeps
//     nanoseconds; every State this package returns is a multiple of 1µs and
//     its At is Redis's time.
//   - Requests in flight are leases that expire: an instance that dies gives
//     its slots back after the lease TTL. A reservation whose lease expired
//     (not renewed in time, see Renew) is abandoned: settling or cancelling
//     it later does nothing, so its tokens stay as reserved.
//   - A rate change (new configured limits, a learned limit) is applied to
//     the stored state when a Reserve or Raise next passes the new limits,
//     at that moment; Settle, Retime and Cancel use the rate stored. Instances
//     with different limits for one id would convert the state back and
//     forth: during a configuration reload they converge when all have it.
//   - A refused reservation leaves no trace. limit.ReserveAll reserves and
//     cancels on the limiters before the one without room, which leaves
//     their tat at now if it was in the past and rolls their day over: the
//     same behaviour, a different representation.
//   - Tokens are capped at 2^50 a request (far above any limit), so that the
//     day counters stay exact.
//
// Settling, retiming and cancelling read the reservation's record and act
// only if it is there (and, for Retime, not yet sent): each takes effect
// once, and so does a retried Reserve of the same reservation, so the
// client's retries on network errors are safe.
//
// # Mirrors
//
// Each instance keeps a limit.Limiter per id as a mirror of the store, for
// selection (Check, Headroom, Status): it loads every State a call returns
// with SetState, and Load refreshes many at once. Learning and 429s are
// computed on the mirror with limit's own rules and pushed as floors:
//
//	r := mirror.LearnRaise(asOf, now, h) // or mirror.ExhaustedRaise(until, tokens)
//	mirror.ApplyRaise(now, r)            // the mirror's limits now include what was learned
//	st, err := store.Raise(ctx, id, mirror.Limits(), r)
//	mirror.SetState(st)
//
// States carry Redis's time; read a mirror at time.Now().Add(store.Offset()).
//
// # Errors
//
// A Redis error or timeout is returned as an error; the caller decides
// whether to fall back to memory. The client should be built with
// ContextTimeoutEnabled, so that a call never outlives its context (go-redis
// otherwise bounds it by its read and write timeouts only).
package redislimit
