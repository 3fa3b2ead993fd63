package limit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The queue runs on the real clock. These tests assert orders and outcomes,
// never how long something took, and wait for conditions with generous
// timeouts so that a loaded machine makes them slow rather than flaky.

const patience = 10 * time.Second

// eventually polls cond until it holds or patience runs out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pool is a resource for tries: a number of free units, taken one per success.
type pool struct {
	mu    sync.Mutex
	free  int
	order []int // who took a unit, in order
	calls map[int]int
}

func (p *pool) try(id int) func(time.Time) (time.Time, bool) {
	return func(time.Time) (time.Time, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.calls == nil {
			p.calls = make(map[int]int)
		}
		p.calls[id]++
		if p.free == 0 {
			return time.Time{}, false
		}
		p.free--
		p.order = append(p.order, id)
		return time.Time{}, true
	}
}

func (p *pool) add(n int) {
	p.mu.Lock()
	p.free += n
	p.mu.Unlock()
}

func (p *pool) count(id int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[id]
}

func (p *pool) taken() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.order...)
}

type result struct {
	id     int
	waited time.Duration
	err    error
}

func TestQueueOrder(t *testing.T) {
	// Arrival order is forced by waiting for each request to join before the next.
	prios := []int{0, 5, 0, 10, 5, 0, -3, 10}
	want := []int{3, 7, 1, 4, 0, 2, 5, 6}

	q := NewQueue(0)
	p := &pool{}
	results := make(chan result, len(prios))
	for id, prio := range prios {
		go func() {
			w, err := q.Wait(context.Background(), prio, time.Time{}, p.try(id))
			results <- result{id, w, err}
		}()
		eventually(t, fmt.Sprintf("request %d to join", id), func() bool { return q.Len() == id+1 })
	}
	// Free one unit at a time: each must go to the head of the queue. A unit
	// freed while a round is running could go to whoever that round tries
	// next (there is no atomicity between a release and its Notify), so each
	// release waits for the previous round to end.
	for i := range prios {
		eventually(t, "the round to end", q.quiet)
		p.add(1)
		q.Notify()
		r := <-results
		if r.err != nil {
			t.Fatalf("request %d: %v", r.id, r.err)
		}
		if r.id != want[i] {
			t.Fatalf("release %d went to request %d, want %d (order so far %v)", i, r.id, want[i], p.taken())
		}
		if r.waited <= 0 {
			t.Errorf("request %d waited %v", r.id, r.waited)
		}
	}
	if q.Len() != 0 {
		t.Errorf("Len = %d, want 0", q.Len())
	}
}

func TestQueueFastPath(t *testing.T) {
	q := NewQueue(0)
	p := &pool{free: 1}
	waited, err := q.Wait(context.Background(), 0, time.Now().Add(time.Hour), p.try(1))
	if err != nil || waited != 0 {
		t.Fatalf("Wait = %v, %v; want 0, nil", waited, err)
	}
	if p.count(1) != 1 || q.Len() != 0 {
		t.Fatalf("try called %d times, Len %d", p.count(1), q.Len())
	}
}

func TestQueueRetryAt(t *testing.T) {
	q := NewQueue(0)
	ready := time.Now().Add(30 * time.Millisecond)
	var calls atomic.Int32
	_, err := q.Wait(context.Background(), 0, time.Time{}, func(now time.Time) (time.Time, bool) {
		calls.Add(1)
		if now.Before(ready) {
			return ready, false
		}
		return time.Time{}, true
	})
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	// Tried at once and at the retry time; a couple more if the timer fired a
	// hair early, but no spinning.
	if n := calls.Load(); n < 2 || n > 5 {
		t.Errorf("try called %d times, want 2 (a few more at most)", n)
	}
}

func TestQueueNotify(t *testing.T) {
	q := NewQueue(0)
	p := &pool{}
	done := make(chan error, 1)
	go func() {
		_, err := q.Wait(context.Background(), 0, time.Time{}, p.try(1))
		done <- err
	}()
	eventually(t, "the request to join", func() bool { return q.Len() == 1 })
	p.add(1)
	q.Notify()
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestQueueDeadline(t *testing.T) {
	q := NewQueue(0)
	var mu sync.Mutex
	var last time.Time
	try := func(now time.Time) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		last = now.Add(time.Hour)
		return last, false
	}
	_, err := q.Wait(context.Background(), 0, time.Now().Add(30*time.Millisecond), try)
	var de *DeadlineError
	if !errors.Is(err, ErrDeadline) || !errors.As(err, &de) {
		t.Fatalf("Wait = %v, want a DeadlineError", err)
	}
	mu.Lock()
	if !de.RetryAt.Equal(last) {
		t.Errorf("RetryAt = %v, want the last try's %v", de.RetryAt, last)
	}
	mu.Unlock()
	if q.Len() != 0 {
		t.Errorf("Len = %d after the deadline", q.Len())
	}

	// A deadline already past gets one try and no queueing.
	p := &pool{}
	_, err = q.Wait(context.Background(), 0, time.Now().Add(-time.Second), p.try(1))
	if !errors.As(err, &de) || !de.RetryAt.IsZero() || p.count(1) != 1 || q.Len() != 0 {
		t.Fatalf("past deadline: err %v, calls %d, Len %d", err, p.count(1), q.Len())
	}
}

func TestQueueCancel(t *testing.T) {
	q := NewQueue(0)
	p := &pool{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := q.Wait(ctx, 0, time.Time{}, p.try(1))
		done <- err
	}()
	eventually(t, "the request to join", func() bool { return q.Len() == 1 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(patience):
		t.Fatal("Wait did not return after cancel")
	}
	if q.Len() != 0 {
		t.Errorf("Len = %d after cancel", q.Len())
	}

	// A context already done: no try at all.
	calls := p.count(1)
	if _, err := q.Wait(ctx, 0, time.Time{}, p.try(1)); !errors.Is(err, context.Canceled) || p.count(1) != calls {
		t.Fatalf("done ctx: Wait = %v, try called %d more times", err, p.count(1)-calls)
	}
}

func TestQueueFull(t *testing.T) {
	q := NewQueue(1)
	p := &pool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := q.Wait(ctx, 0, time.Time{}, p.try(1))
		done <- err
	}()
	eventually(t, "the first request to join", func() bool { return q.Len() == 1 })
	if _, err := q.Wait(context.Background(), 100, time.Time{}, p.try(2)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("second Wait = %v, want ErrQueueFull", err)
	}
	if n := p.count(2); n != 1 {
		t.Errorf("the refused request's try ran %d times, want 1", n)
	}
	cancel()
	<-done
}

// TestQueueNoOvertaking checks that a newcomer does not try at once while a
// round is running, which would let it take capacity before older waiters.
func TestQueueNoOvertaking(t *testing.T) {
	q := NewQueue(0)
	entered, release := make(chan struct{}), make(chan struct{})
	var aCalls atomic.Int32
	aDone := make(chan error, 1)
	go func() {
		_, err := q.Wait(context.Background(), 0, time.Time{}, func(time.Time) (time.Time, bool) {
			if aCalls.Add(1) == 1 {
				return time.Time{}, false
			}
			entered <- struct{}{}
			<-release
			return time.Time{}, true
		})
		aDone <- err
	}()
	eventually(t, "A to join", func() bool { return q.Len() == 1 })
	q.Notify()
	<-entered // the dispatcher is inside A's try

	var bCalls atomic.Int32
	bDone := make(chan error, 1)
	go func() {
		_, err := q.Wait(context.Background(), 10, time.Time{}, func(time.Time) (time.Time, bool) {
			bCalls.Add(1)
			return time.Time{}, true
		})
		bDone <- err
	}()
	eventually(t, "B to join", func() bool { return q.Len() == 2 })
	if n := bCalls.Load(); n != 0 {
		t.Fatalf("B's try ran %d times during A's round", n)
	}
	close(release)
	if err := <-aDone; err != nil {
		t.Fatalf("A: %v", err)
	}
	if err := <-bDone; err != nil {
		t.Fatalf("B: %v", err)
	}
	if n := bCalls.Load(); n != 1 {
		t.Errorf("B's try ran %d times, want 1", n)
	}
}

// TestQueueRestart checks that capacity released while a round is running
// goes to the head of the queue, not to whoever the round would try next.
func TestQueueRestart(t *testing.T) {
	q := NewQueue(0)
	p := &pool{}
	entered, release := make(chan struct{}), make(chan struct{})
	var xCalls atomic.Int32
	xCtx, cancelX := context.WithCancel(context.Background())
	done := make(chan result, 3)
	start := func(id, prio int, ctx context.Context, try func(time.Time) (time.Time, bool)) {
		go func() {
			w, err := q.Wait(ctx, prio, time.Time{}, try)
			done <- result{id, w, err}
		}()
		eventually(t, fmt.Sprintf("request %d to join", id), func() bool { return q.Len() == id+1 })
	}
	start(0, 10, context.Background(), p.try(0))
	start(1, 5, xCtx, func(time.Time) (time.Time, bool) {
		if xCalls.Add(1) == 2 {
			entered <- struct{}{}
			<-release
		}
		return time.Time{}, false
	})
	start(2, 0, context.Background(), p.try(2))

	q.Notify()
	<-entered // the round has tried request 0 and is inside request 1's try
	p.add(1)
	q.Notify()
	close(release)
	if r := <-done; r.id != 0 || r.err != nil {
		t.Fatalf("first out: request %d (%v), want 0; taken %v", r.id, r.err, p.taken())
	}
	p.add(1)
	q.Notify()
	if r := <-done; r.id != 2 || r.err != nil {
		t.Fatalf("second out: request %d (%v), want 2", r.id, r.err)
	}
	cancelX()
	if r := <-done; r.id != 1 || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("last out: request %d (%v), want 1 cancelled", r.id, r.err)
	}
}

func TestQueuePanic(t *testing.T) {
	q := NewQueue(0)
	var calls atomic.Int32
	got := make(chan any, 1)
	go func() {
		defer func() { got <- recover() }()
		q.Wait(context.Background(), 0, time.Time{}, func(time.Time) (time.Time, bool) {
			if calls.Add(1) == 1 {
				return time.Time{}, false
			}
			panic("boom")
		})
	}()
	eventually(t, "the request to join", func() bool { return q.Len() == 1 })
	q.Notify()
	if v := <-got; v != "boom" {
		t.Fatalf("recovered %v, want boom", v)
	}
	if q.Len() != 0 {
		t.Errorf("Len = %d after the panic", q.Len())
	}
}

// quiet reports whether no round is running or pending.
func (q *Queue) quiet() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.inRound && !q.all.Load()
}

// idle reports whether the queue has no waiter and no dispatcher.
func (q *Queue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ws) == 0 && !q.running && q.n.Load() == 0
}

// TestQueueStress runs many requests through a limiter and the queue at once,
// with cancellations, deadlines and releases; run with -race. Every request
// must end, every reservation must be returned, and nothing may keep running.
func TestQueueStress(t *testing.T) {
	before := runtime.NumGoroutine()
	q := NewQueue(0)
	// 60,000 RPM with a 10ms burst: ten requests at once, then one a
	// millisecond; at most three in flight.
	lim := NewLimiter(Limits{RPM: 60000, TPM: 6e6, Burst: 10 * time.Millisecond, MaxConcurrent: 3})
	const workers, each = 16, 25
	var served, timedOut, cancelled atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range each {
				ctx, cancel := context.WithCancel(context.Background())
				deadline := time.Time{}
				switch rng.IntN(8) {
				case 0:
					deadline = time.Now().Add(time.Duration(rng.IntN(3)) * time.Millisecond)
				case 1:
					after := time.Duration(rng.IntN(2000)) * time.Microsecond
					go func() {
						time.Sleep(after)
						cancel()
					}()
				}
				var r Reservation
				_, err := q.Wait(ctx, rng.IntN(3), deadline, func(now time.Time) (time.Time, bool) {
					var at time.Time
					var ok bool
					r, at, ok = lim.Reserve(now, int64(rng.IntN(100)))
					return at, ok
				})
				switch {
				case err == nil:
					if ctx.Err() != nil {
						r.Cancel(time.Now()) // the client went away after all
					} else {
						time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
						r.Settle(time.Now(), int64(rng.IntN(100)))
					}
					served.Add(1)
					q.Notify()
				case errors.Is(err, ErrDeadline):
					timedOut.Add(1)
				case errors.Is(err, context.Canceled):
					cancelled.Add(1)
				default:
					t.Errorf("Wait: %v", err)
				}
				cancel()
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("stuck: %d served, %d timed out, %d cancelled, %d queued", served.Load(), timedOut.Load(), cancelled.Load(), q.Len())
	}
	if total := served.Load() + timedOut.Load() + cancelled.Load(); total != workers*each {
		t.Errorf("%d outcomes for %d requests", total, workers*each)
	}
	if n := lim.InFlight(); n != 0 {
		t.Errorf("InFlight = %d at the end", n)
	}
	if served.Load() == 0 {
		t.Error("nothing served")
	}
	t.Logf("%d served, %d timed out, %d cancelled", served.Load(), timedOut.Load(), cancelled.Load())
	eventually(t, "the queue to go idle", q.idle)
	eventually(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestQueueNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	q := NewQueue(0)
	p := &pool{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for id := range 6 {
		wg.Go(func() {
			switch id % 3 {
			case 0:
				q.Wait(ctx, 0, time.Time{}, func(time.Time) (time.Time, bool) { return time.Time{}, false })
			case 1:
				q.Wait(context.Background(), 0, time.Now().Add(20*time.Millisecond), func(now time.Time) (time.Time, bool) {
					return now.Add(time.Hour), false
				})
			case 2:
				q.Wait(context.Background(), 0, time.Time{}, p.try(id))
			}
		})
	}
	// Those with a deadline may already have left; the other four stay until released.
	eventually(t, "requests to join", func() bool { return q.Len() >= 4 })
	p.add(2)
	q.Notify()
	cancel()
	wg.Wait()
	eventually(t, "the queue to go idle", q.idle)
	eventually(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestQueueGivesUpWhenRetryIsPastDeadline(t *testing.T) {
	q := NewQueue(0)
	deadline := time.Now().Add(time.Hour)
	late := deadline.Add(time.Hour)
	start := time.Now()
	_, err := q.Wait(context.Background(), 0, deadline, func(time.Time) (time.Time, bool) { return late, false })
	var de *DeadlineError
	if !errors.As(err, &de) || !de.RetryAt.Equal(late) {
		t.Fatalf("got %v; want a DeadlineError at once", err)
	}
	if time.Since(start) > 5*time.Second || q.Len() != 0 {
		t.Fatalf("waited %v, queue length %d", time.Since(start), q.Len())
	}

	// A queued waiter whose later try reports a retry time past its deadline
	// leaves at once too.
	calls := 0
	done := make(chan error, 1)
	go func() {
		_, err := q.Wait(context.Background(), 0, deadline, func(time.Time) (time.Time, bool) {
			calls++
			if calls == 1 {
				return time.Time{}, false // wait for a release
			}
			return late, false
		})
		done <- err
	}()
	for q.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	q.Notify()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDeadline) {
			t.Fatalf("got %v; want ErrDeadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not give up")
	}
}

// TestQueueStats checks the waiters counted by priority and the oldest
// arrival, and that both empty as the waiters leave.
func TestQueueStats(t *testing.T) {
	q := NewQueue(0)
	if st := q.Stats(); st.Len != 0 || !st.Oldest.IsZero() || len(st.ByPriority) != 0 {
		t.Fatalf("empty queue: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	never := func(time.Time) (time.Time, bool) { return time.Time{}, false }
	before := time.Now()
	done := make(chan struct{})
	prios := []int{1, 0, 0, -1}
	for i, prio := range prios {
		go func() {
			_, _ = q.Wait(ctx, prio, time.Time{}, never)
			done <- struct{}{}
		}()
		eventually(t, fmt.Sprintf("waiter %d to join", i), func() bool { return q.Len() == i+1 })
	}
	st := q.Stats()
	if st.Len != 4 || st.ByPriority[1] != 1 || st.ByPriority[0] != 2 || st.ByPriority[-1] != 1 {
		t.Errorf("stats: %+v", st)
	}
	if st.Oldest.Before(before) || st.Oldest.After(time.Now()) {
		t.Errorf("oldest arrival %v, not within the test's run (from %v)", st.Oldest, before)
	}
	cancel()
	for range prios {
		<-done
	}
	if st := q.Stats(); st.Len != 0 || !st.Oldest.IsZero() {
		t.Errorf("after the waiters left: %+v", st)
	}
}
