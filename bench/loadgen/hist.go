package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a log-linear histogram of durations in nanoseconds, in the
// manner of HdrHistogram: values below 2^subBits are counted exactly, larger
// ones in buckets of subBits-1 significant bits, so a bucket's width is under
// 1/2^(subBits-1) of its value (0.8% here). Recording is lock-free.
type histogram struct {
	counts [64 << (subBits - 1)]atomic.Uint64
	total  atomic.Uint64
	max    atomic.Int64
}

const subBits = 8

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits
	return e<<(subBits-1) + int(v>>e)
}

// bucketHigh is the highest value counted in bucket i.
func bucketHigh(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i>>(subBits-1) - 1
	m := uint64(i - e<<(subBits-1))
	return (m+1)<<e - 1
}

func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// quantile is the highest value of the bucket holding the q-th value
// (0 < q ≤ 1); 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(time.Duration(bucketHigh(i)), time.Duration(h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}
