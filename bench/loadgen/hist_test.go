package main

import (
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<22; v += 1 + v/300 {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d after %d: not monotonic", v, i, prev)
		}
		prev = i
		if hi := bucketHigh(i); hi < v || float64(hi-v) > float64(v)/128+1 {
			t.Fatalf("bucketHigh(bucketOf(%d)) = %d: off by more than 1/128", v, hi)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if got < c.want || got > c.want+c.want/100 {
			t.Errorf("quantile(%v) = %v, want %v (+1%%)", c.q, got, c.want)
		}
	}
}
