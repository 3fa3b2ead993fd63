package limit

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// roomy are limits with every dimension set, high enough that benchmarks
// measure the bookkeeping and not rejections.
var roomy = Limits{RPM: 1e9, TPM: 1e12, RPD: 1e15, TPD: 1e18, MaxConcurrent: 1e9}

func BenchmarkReserveSettle(b *testing.B) {
	l := NewLimiter(roomy)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		r, _, ok := l.Reserve(now, 1000)
		if !ok {
			b.Fatal("Reserve failed")
		}
		r.Settle(now, 700)
	}
}

// BenchmarkReserveSettleParallel has every goroutine on one limiter: the
// worst case, one hot key.
func BenchmarkReserveSettleParallel(b *testing.B) {
	l := NewLimiter(roomy)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			now := time.Now()
			r, _, ok := l.Reserve(now, 1000)
			if !ok {
				b.Error("Reserve failed")
				return
			}
			r.Settle(now, 700)
		}
	})
}

// BenchmarkReserveSettleParallelKeys spreads goroutines over 1,000 limiters,
// as a pool of keys does.
func BenchmarkReserveSettleParallelKeys(b *testing.B) {
	ls := make([]*Limiter, 1000)
	for i := range ls {
		ls[i] = NewLimiter(roomy)
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(7919)
		for pb.Next() {
			i++
			now := time.Now()
			r, _, ok := ls[i%uint64(len(ls))].Reserve(now, 1000)
			if !ok {
				b.Error("Reserve failed")
				return
			}
			r.Settle(now, 700)
		}
	})
}

// BenchmarkReserveAll is a key, its limit group and a client.
func BenchmarkReserveAll(b *testing.B) {
	key, group, client := NewLimiter(roomy), NewLimiter(roomy), NewLimiter(roomy)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		m, _, ok := ReserveAll(now, 1000, key, group, client)
		if !ok {
			b.Fatal("ReserveAll failed")
		}
		m.Settle(now, 700)
	}
}

func BenchmarkLearn(b *testing.B) {
	l := NewLimiter(Limits{})
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "10000")
	h.Set("x-ratelimit-limit-tokens", "30000000")
	h.Set("x-ratelimit-remaining-requests", "9999")
	h.Set("x-ratelimit-remaining-tokens", "29999000")
	h.Set("x-ratelimit-reset-requests", "6ms")
	h.Set("x-ratelimit-reset-tokens", "2ms")
	b.ReportAllocs()
	for b.Loop() {
		l.Learn(t0, h)
	}
}

func BenchmarkHeadroom(b *testing.B) {
	l := NewLimiter(roomy)
	b.ReportAllocs()
	for b.Loop() {
		l.Headroom(t0)
	}
}

func BenchmarkParseResetDuration(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ParseResetDuration("1m30.5s")
	}
}

// BenchmarkQueueFastPath is Wait when nothing waits and try succeeds: the
// cost the queue adds to a request that does not queue.
func BenchmarkQueueFastPath(b *testing.B) {
	q := NewQueue(0)
	ctx := context.Background()
	try := func(time.Time) (time.Time, bool) { return time.Time{}, true }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Wait(ctx, 0, time.Time{}, try); err != nil {
			b.Fatal(err)
		}
		q.Notify()
	}
}

// BenchmarkQueueContended has many goroutines compete for four slots, so
// that most requests queue and are served by the dispatcher.
func BenchmarkQueueContended(b *testing.B) {
	q := NewQueue(0)
	var mu sync.Mutex
	free := 4
	try := func(time.Time) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		if free == 0 {
			return time.Time{}, false
		}
		free--
		return time.Time{}, true
	}
	ctx := context.Background()
	b.SetParallelism(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Wait(ctx, 0, time.Time{}, try); err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			free++
			mu.Unlock()
			q.Notify()
		}
	})
}
