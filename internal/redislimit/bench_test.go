package redislimit

import (
	"context"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkReserveSettle is one request's two round trips to a loopback
// Redis: Reserve and Settle, on a key alone and on a key and a client.
// µs/reserve is the Reserve round trip alone.
func BenchmarkReserveSettle(b *testing.B) {
	srv := redistest.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer c.Close()
	b.Run("ping", func(b *testing.B) { // the round trip's floor, for comparison
		for b.Loop() {
			if err := c.Ping(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	huge := limit.Limits{RPM: 1e9, TPM: 1e12, RPD: 1e12, TPD: 1e15, MaxConcurrent: 1000}
	for _, bb := range []struct {
		name  string
		items []Item
	}{
		{"key", []Item{{ID: "key", Limits: huge}}},
		{"key+client", []Item{{ID: "key", Limits: huge}, {ID: "client", Limits: limit.Limits{RPM: 1e9}}}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			s := New(c, prefix(b))
			ctx := context.Background()
			var inReserve time.Duration
			for b.Loop() {
				start := time.Now()
				r, _, _, ok, err := s.Reserve(ctx, 100, bb.items, time.Minute)
				inReserve += time.Since(start)
				if err != nil || !ok {
					b.Fatal(ok, err)
				}
				if _, err := s.Settle(ctx, r, 80); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2, "roundtrips/op")
			b.ReportMetric(float64(inReserve.Microseconds())/float64(b.N), "µs/reserve")
		})
	}
}
