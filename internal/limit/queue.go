package limit

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrQueueFull is returned by Queue.Wait when the request cannot go now and
// the queue already holds its maximum number of waiters.
var ErrQueueFull = errors.New("limit: wait queue is full")

// ErrDeadline is what a *DeadlineError matches with errors.Is.
var ErrDeadline = errors.New("limit: deadline passed while waiting for capacity")

// DeadlineError is returned by Queue.Wait when the deadline passes before
// capacity is found. RetryAt is the retry time returned by the request's last
// try (the zero Time if only a release could have helped), for Retry-After.
type DeadlineError struct {
	RetryAt time.Time
}

// Error implements error.
func (e *DeadlineError) Error() string { return ErrDeadline.Error() }

// Is makes errors.Is(err, ErrDeadline) hold.
func (e *DeadlineError) Is(target error) bool { return target == ErrDeadline }

// retrySpin is how long a waiter whose try failed with a retry time that has
// already passed is left alone, so that a misbehaving try cannot make the
// dispatcher spin.
const retrySpin = time.Millisecond

// Waiter states, guarded by Queue.mu.
const (
	waiting uint8 = iota // in the queue, no try running
	trying               // the dispatcher is running its try
	done                 // out of the queue; done is closed
)

// waiter is one request in the queue.
type waiter struct {
	prio  int
	seq   uint64
	since time.Time // when it joined the queue
	try   func(time.Time) (time.Time, bool)
	done  chan struct{} // closed by the dispatcher when it takes the waiter out

	// Guarded by Queue.mu; read without it after done is closed.
	state   uint8
	next    int64 // mono time from which the dispatcher tries again unprompted; MaxInt64: only after Notify
	retryAt time.Time
	leaving bool // the request gave up while its try was running
	granted bool
	// deadline is when the request gives up; a try whose retry time is later
	// ends the wait at once, since waiting could not help.
	deadline time.Time
	hopeless bool
	panicV   any // what its try panicked with, re-panicked in the waiting goroutine
}

// Queue holds requests that wait for capacity, ordered by priority (higher
// first) then arrival. One dispatcher goroutine, running only while the queue
// is not empty, calls the waiters' tries in queue order, so that a
// higher-priority or older waiter gets freed capacity first and no two tries
// of the queue run at once. It is safe for concurrent use.
type Queue struct {
	max  int
	n    atomic.Int64  // len(ws), readable without the lock
	gen  atomic.Uint64 // counts Notify calls, to catch one between a try and joining
	all  atomic.Bool   // a Notify happened: every waiter should be tried
	wake chan struct{} // nudges the dispatcher; capacity 1, so a nudge is never lost

	mu       sync.Mutex
	ws       []*waiter // sorted by priority, descending, then seq
	seq      uint64
	running  bool  // the dispatcher goroutine exists
	inRound  bool  // the dispatcher is going through the waiters
	earliest int64 // no waiter's next is before this (a lower bound)
}

// NewQueue returns a queue of at most maxLen waiters; maxLen <= 0 means no bound.
func NewQueue(maxLen int) *Queue {
	return &Queue{
		max:      maxLen,
		wake:     make(chan struct{}, 1),
		earliest: math.MaxInt64,
	}
}

// QueueStats describe the waiting requests.
type QueueStats struct {
	Len int
	// ByPriority counts the waiting requests of each priority.
	ByPriority map[int]int
	// Oldest is when the longest-waiting request joined; the zero Time
	// when none waits.
	Oldest time.Time
}

// Stats describes the waiting requests. It takes the queue's lock for a
// pass over the waiters: for a status page, not for a request's path.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := QueueStats{Len: len(q.ws), ByPriority: make(map[int]int)}
	for _, w := range q.ws {
		st.ByPriority[w.prio]++
		if st.Oldest.IsZero() || w.since.Before(st.Oldest) {
			st.Oldest = w.since
		}
	}
	return st
}

// Len returns the number of waiting requests.
func (q *Queue) Len() int { return int(q.n.Load()) }

// Notify tells the queue that capacity may have been released (a reservation
// settled or cancelled, a limit raised), so that every waiter's try runs
// again. It is cheap when the queue is empty and never blocks.
func (q *Queue) Notify() {
	q.gen.Add(1)
	if q.n.Load() == 0 {
		return
	}
	q.all.Store(true)
	q.nudge()
}

func (q *Queue) nudge() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Wait runs try until it succeeds. try is the caller's attempt to take
// capacity (pick a key and reserve on it): cheap, non-blocking, returning
// ok or the earliest time it could succeed (the zero Time if only a release
// can help). Wait calls it at once, except that a newcomer does not jump
// waiters that have something to retry (a Notify or a retry time that has
// come): then it joins the queue and takes its turn in order. If that first
// try fails, the request joins the queue (ErrQueueFull if it is full). A
// queued request's try is called again, from the queue's dispatcher goroutine
// and in queue order, whenever Notify is called or its retry time passes.
//
// Wait returns how long the request waited, and nil once try has succeeded;
// the caller then owns what try took, even if ctx is done by then. It returns
// ctx.Err() as soon as ctx is done (the request leaves the queue at once; a
// try already running is waited for, and counts if it succeeds), and a
// *DeadlineError (errors.Is(err, ErrDeadline)) when deadline passes, or as
// soon as a try says it could not succeed before the deadline; the zero
// deadline means none. If try panics, Wait panics with the same value.
//
// The queue never runs two waiters' tries at once, but a newcomer's first try
// may run alongside one, so try must be safe for concurrent use with the
// tries of other requests. It must not call Notify: a failed try that gives
// back what it took released nothing, and notifying would have the queue
// retry every waiter for nothing, again and again.
func (q *Queue) Wait(ctx context.Context, priority int, deadline time.Time, try func(now time.Time) (retryAt time.Time, ok bool)) (waited time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := time.Now()
	g := q.gen.Load()
	expired := !deadline.IsZero() && !start.Before(deadline)
	var at time.Time
	tried := false
	if expired || q.n.Load() == 0 || q.clear(start) {
		var ok bool
		if at, ok = try(start); ok {
			return 0, nil
		}
		tried = true
		if expired || beyond(at, deadline) {
			return 0, &DeadlineError{RetryAt: at}
		}
	}

	q.mu.Lock()
	if q.max > 0 && len(q.ws) >= q.max {
		q.mu.Unlock()
		if !tried {
			if _, ok := try(time.Now()); ok {
				return 0, nil
			}
		}
		return time.Since(start), ErrQueueFull
	}
	q.seq++
	w := &waiter{prio: priority, seq: q.seq, since: start, try: try, done: make(chan struct{}), retryAt: at, deadline: deadline}
	i, _ := slices.BinarySearchFunc(q.ws, w, compareWaiters)
	q.ws = slices.Insert(q.ws, i, w)
	q.n.Add(1)
	// Checked after n is raised: a Notify either sees the waiter or is seen here.
	if !tried || q.gen.Load() != g {
		w.next = 0
	} else {
		w.next = nextTry(at, time.Now())
	}
	lowered := w.next < q.earliest
	q.earliest = min(q.earliest, w.next)
	if !q.running {
		q.running = true
		go q.dispatch()
	}
	q.mu.Unlock()
	if lowered {
		q.nudge()
	}

	var expiry <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		expiry = timer.C
	}
	select {
	case <-w.done:
		return q.outcome(w, start, nil)
	case <-ctx.Done():
		return q.leave(w, start, ctx.Err())
	case <-expiry:
		return q.leave(w, start, ErrDeadline)
	}
}

// clear reports whether a request arriving at now may try at once without
// overtaking a waiter: no Notify is pending, no round is running and no
// waiter's retry time has come.
func (q *Queue) clear(now time.Time) bool {
	if q.all.Load() {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.inRound && q.earliest > mono(now)
}

// leave takes a waiter that gave up out of the queue, or, if its try is
// running, waits for that try (which counts if it succeeded).
func (q *Queue) leave(w *waiter, start time.Time, reason error) (time.Duration, error) {
	q.mu.Lock()
	switch w.state {
	case waiting:
		q.removeLocked(w)
		empty := len(q.ws) == 0
		q.mu.Unlock()
		if empty {
			q.nudge() // so that an idle dispatcher sees the empty queue and exits
		}
		return q.outcome(w, start, reason)
	case trying:
		w.leaving = true
		q.mu.Unlock()
		<-w.done
	default:
		q.mu.Unlock()
	}
	return q.outcome(w, start, reason)
}

// outcome turns a waiter that is out of the queue into Wait's results.
func (q *Queue) outcome(w *waiter, start time.Time, reason error) (time.Duration, error) {
	waited := time.Since(start)
	if w.panicV != nil {
		panic(w.panicV)
	}
	if w.granted {
		return waited, nil
	}
	if reason == ErrDeadline || w.hopeless {
		return waited, &DeadlineError{RetryAt: w.retryAt}
	}
	return waited, reason
}

// removeLocked takes w out of the queue. The caller holds q.mu.
func (q *Queue) removeLocked(w *waiter) {
	w.state = done
	if i, ok := slices.BinarySearchFunc(q.ws, w, compareWaiters); ok {
		q.ws = slices.Delete(q.ws, i, i+1)
		q.n.Add(-1)
	}
}

// compareWaiters orders waiters by priority, descending, then arrival.
func compareWaiters(a, b *waiter) int {
	if c := cmp.Compare(b.prio, a.prio); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// epoch anchors mono. Queue times are kept on the monotonic clock, so that a
// step of the wall clock neither stalls nor hurries retries.
var epoch = time.Now()

// mono is t in nanoseconds on the monotonic clock, for t read from time.Now.
func mono(t time.Time) int64 { return int64(t.Sub(epoch)) }

// nextTry is when, on the mono scale, a waiter whose try failed at now with
// retryAt is tried again without a Notify.
func nextTry(retryAt, now time.Time) int64 {
	if retryAt.IsZero() {
		return math.MaxInt64
	}
	d := retryAt.Sub(now) // on the wall clock: retryAt may carry no monotonic reading
	if d <= 0 {
		d = retrySpin
	}
	m := mono(now)
	if int64(d) > math.MaxInt64-m {
		return math.MaxInt64 // centuries away: only a Notify will do
	}
	return m + int64(d)
}

// dispatch runs rounds of tries while the queue is not empty: of every waiter
// after a Notify, otherwise of those whose retry time has come. Between
// rounds it sleeps until the earliest retry time or a nudge. It exits, with
// its timer stopped, when the queue is empty.
func (q *Queue) dispatch() {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		all := q.all.Swap(false)
		q.mu.Lock()
		if len(q.ws) == 0 {
			q.running = false
			q.earliest = math.MaxInt64
			q.mu.Unlock()
			return
		}
		now := mono(time.Now())
		if next := q.earliest; !all && next > now {
			q.mu.Unlock()
			if next == math.MaxInt64 {
				<-q.wake
				continue
			}
			if timer == nil {
				timer = time.NewTimer(time.Duration(next - now))
			} else {
				timer.Reset(time.Duration(next - now))
			}
			select {
			case <-q.wake:
			case <-timer.C:
			}
			continue
		}
		q.inRound = true
		q.mu.Unlock()

		q.round(all)

		q.mu.Lock()
		q.inRound = false
		q.earliest = math.MaxInt64
		for _, w := range q.ws {
			q.earliest = min(q.earliest, w.next)
		}
		q.mu.Unlock()
	}
}

// round tries waiters in queue order: all of them, or only those due. The
// lock is not held while a try runs; the position is kept as the last
// waiter's key, so waiters may join and leave meanwhile.
//
// A Notify during the round sends it back to the head, so that capacity
// released meanwhile goes to the first waiter that can use it rather than to
// whoever the round was about to try. To guarantee progress under a stream of
// Notify calls, it goes back only from its frontier (the furthest waiter
// tried): every restart gets at least one waiter further.
func (q *Queue) round(all bool) {
	start := waiter{prio: math.MaxInt, seq: 0} // before every waiter
	cursor, frontier := start, start
	for {
		q.mu.Lock()
		if compareWaiters(&cursor, &frontier) >= 0 && q.all.Swap(false) {
			all, cursor = true, start
		}
		now := time.Now()
		i, found := slices.BinarySearchFunc(q.ws, &cursor, compareWaiters)
		if found {
			i++
		}
		if !all {
			t := mono(now)
			for i < len(q.ws) && q.ws[i].next > t {
				i++
			}
		}
		if i == len(q.ws) {
			q.mu.Unlock()
			return
		}
		w := q.ws[i]
		cursor.prio, cursor.seq = w.prio, w.seq
		if compareWaiters(&cursor, &frontier) > 0 {
			frontier = cursor
		}
		w.state = trying
		q.mu.Unlock()

		at, ok, p := runTry(w.try, now)

		q.mu.Lock()
		w.retryAt = at
		if ok || p != nil || w.leaving || beyond(at, w.deadline) {
			q.removeLocked(w)
			w.granted, w.panicV = ok, p
			w.hopeless = !ok && p == nil && !w.leaving
			close(w.done)
		} else {
			w.state = waiting
			w.next = nextTry(at, time.Now())
		}
		q.mu.Unlock()
	}
}

// beyond reports whether a retry time is past the deadline, so that waiting
// cannot help (a zero retry time means "after a release", which can come at
// any moment).
func beyond(retryAt, deadline time.Time) bool {
	return !retryAt.IsZero() && !deadline.IsZero() && retryAt.After(deadline)
}

// runTry calls try, turning a panic into a value to hand to the waiter, so
// that it surfaces in the request's goroutine rather than killing the process.
func runTry(try func(time.Time) (time.Time, bool), now time.Time) (at time.Time, ok bool, panicV any) {
	defer func() {
		if p := recover(); p != nil {
			at, ok, panicV = time.Time{}, false, p
		}
	}()
	at, ok = try(now)
	return at, ok, nil
}
