package fakeopenai

import (
	"math"
	"strconv"
	"time"
)

// bucket is a continuously refilling token bucket. limit == 0 means no limit.
type bucket struct {
	limit    int     // per minute
	capacity float64 // what it holds when full
	rate     float64 // per second
	level    float64 // may go negative (debt) after an oversized request
	last     time.Time
}

func (b *bucket) init(limit int, burst time.Duration, min float64, now time.Time) {
	*b = bucket{limit: limit, last: now}
	if limit <= 0 {
		return
	}
	b.rate = float64(limit) / 60
	b.capacity = math.Max(float64(limit)*burst.Seconds()/60, min)
	b.level = b.capacity
}

func (b *bucket) refill(now time.Time) {
	if b.limit <= 0 {
		return
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.level = math.Min(b.capacity, b.level+dt*b.rate)
		b.last = now
	}
}

// wait is how long until the bucket holds need.
func (b *bucket) wait(need float64) time.Duration {
	if b.limit <= 0 || b.level >= need {
		return 0
	}
	return time.Duration((need - b.level) / b.rate * float64(time.Second))
}

// deficit is what the bucket lacks to be full (debt included).
func (b *bucket) deficit() float64 {
	if b.limit <= 0 || b.level >= b.capacity {
		return 0
	}
	return b.capacity - b.level
}

// remaining is what remains of the minute's allowance: floor(limit −
// deficit), ≥ 0 (what x-ratelimit-remaining-* reports).
func (b *bucket) remaining() int {
	return floorPos(float64(b.limit) - b.deficit())
}

// level is the bucket's own level, floored, ≥ 0 (Options.BucketRemaining).
func (b *bucket) levelInt() int { return floorPos(b.level) }

func floorPos(x float64) int {
	if x <= 0 {
		return 0
	}
	return int(math.Floor(x + 1e-9))
}

// resetIn is the time until the bucket is full again: deficit / rate.
func (b *bucket) resetIn() time.Duration {
	if d := b.deficit(); d > 0 {
		return time.Duration(d / b.rate * float64(time.Second))
	}
	return 0
}

func (k *keyEntry) setLimits(lim KeyLimits, now time.Time) {
	if lim.Burst <= 0 {
		lim.Burst = time.Second
	}
	k.mu.Lock()
	k.limits = lim
	k.rpm.init(lim.RPM, lim.Burst, 1, now)
	k.tpm.init(lim.TPM, lim.Burst, 1, now)
	k.mu.Unlock()
}

// rlSnapshot is what the x-ratelimit-* headers report.
type rlSnapshot struct {
	rpmLimit, tpmLimit         int
	rpmRemaining, tpmRemaining int // of the minute's allowance
	rpmLevel, tpmLevel         int // of the bucket
	rpmReset, tpmReset         time.Duration
}

// rlDenial says why a request was refused.
type rlDenial struct {
	kind      string // "requests" or "tokens"
	limit     int
	used      int
	requested int
	wait      time.Duration
	tooLarge  bool
}

// admitN checks and debits the buckets for reqs requests (1, or 0 for the
// responses of a Realtime session, which is charged its one request when it
// opens) of the given token cost. It returns the header snapshot and, when
// refused, the reason.
func (k *keyEntry) admitN(now time.Time, reqs, cost int) (rlSnapshot, *rlDenial) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rpm.refill(now)
	k.tpm.refill(now)
	var d *rlDenial
	if k.tpm.limit > 0 && cost > k.tpm.limit {
		d = &rlDenial{kind: "tokens", limit: k.tpm.limit, requested: cost, tooLarge: true}
	} else {
		needT := math.Min(float64(cost), k.tpm.capacity)
		wr, wt := k.rpm.wait(float64(reqs)), k.tpm.wait(needT)
		switch {
		case wr > 0:
			d = &rlDenial{kind: "requests", limit: k.rpm.limit, used: k.rpm.limit - k.rpm.remaining(), requested: 1, wait: max(wr, wt)}
		case wt > 0:
			d = &rlDenial{kind: "tokens", limit: k.tpm.limit, used: k.tpm.limit - k.tpm.remaining(), requested: cost, wait: wt}
		default:
			if k.rpm.limit > 0 {
				k.rpm.level -= float64(reqs)
			}
			if k.tpm.limit > 0 {
				k.tpm.level -= float64(cost)
			}
		}
	}
	return k.snapshotLocked(), d
}

// refund gives n tokens back to the TPM bucket.
func (k *keyEntry) refund(now time.Time, n int) {
	if n <= 0 {
		return
	}
	k.mu.Lock()
	if k.tpm.limit > 0 {
		k.tpm.refill(now)
		k.tpm.level = math.Min(k.tpm.capacity, k.tpm.level+float64(n))
	}
	k.mu.Unlock()
}

func (k *keyEntry) snapshot(now time.Time) rlSnapshot {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rpm.refill(now)
	k.tpm.refill(now)
	return k.snapshotLocked()
}

func (k *keyEntry) snapshotLocked() rlSnapshot {
	return rlSnapshot{
		rpmLimit: k.rpm.limit, tpmLimit: k.tpm.limit,
		rpmRemaining: k.rpm.remaining(), tpmRemaining: k.tpm.remaining(),
		rpmLevel: k.rpm.levelInt(), tpmLevel: k.tpm.levelInt(),
		rpmReset: k.rpm.resetIn(), tpmReset: k.tpm.resetIn(),
	}
}

// FormatDuration formats d as OpenAI does in x-ratelimit-reset-* and in its
// rate limit messages: Go's duration syntax rounded up to the millisecond
// ("1s", "6m0s", "20ms", "1m30.5s"; "0s" for zero).
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	d = (d + time.Millisecond - 1) / time.Millisecond * time.Millisecond
	return d.String()
}

func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func ceilMillis(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	return max(ms, 1)
}

var (
	hLimitReq  = "X-Ratelimit-Limit-Requests"
	hLimitTok  = "X-Ratelimit-Limit-Tokens"
	hRemReq    = "X-Ratelimit-Remaining-Requests"
	hRemTok    = "X-Ratelimit-Remaining-Tokens"
	hResetReq  = "X-Ratelimit-Reset-Requests"
	hResetTok  = "X-Ratelimit-Reset-Tokens"
	hRetry     = "Retry-After"
	hRetryMs   = "Retry-After-Ms"
	hReqID     = "X-Request-Id"
	hProcMs    = "Openai-Processing-Ms"
	hOrg       = "Openai-Organization"
	hVersion   = "Openai-Version"
	hCT        = "Content-Type"
	hCE        = "Content-Encoding"
	hCL        = "Content-Length"
	hVary      = "Vary"
	hProject   = "Openai-Project"
	gzipEnc    = []string{"gzip"}
	varyAE     = []string{"Accept-Encoding"}
	ctJSON     = []string{"application/json"}
	ctSSE      = []string{"text/event-stream; charset=utf-8"}
	orgFake    = []string{"org-fake"}
	version    = []string{"2020-10-01"}
	noCache    = []string{"no-cache"}
	hCacheCtrl = "Cache-Control"
)

// setRateHeaders writes the x-ratelimit-* headers, named and formatted as
// OpenAI documents them (platform.openai.com/docs/guides/rate-limits, "Rate
// limits in headers": x-ratelimit-limit-requests 60, -remaining-requests 59,
// -reset-requests 1s; -reset-tokens 6m0s).
func setRateHeaders(h map[string][]string, s rlSnapshot, bucketLevel bool) {
	if s.rpmLimit > 0 {
		rem := s.rpmRemaining
		if bucketLevel {
			rem = s.rpmLevel
		}
		h[hLimitReq] = []string{strconv.Itoa(s.rpmLimit)}
		h[hRemReq] = []string{strconv.Itoa(rem)}
		h[hResetReq] = []string{FormatDuration(s.rpmReset)}
	}
	if s.tpmLimit > 0 {
		rem := s.tpmRemaining
		if bucketLevel {
			rem = s.tpmLevel
		}
		h[hLimitTok] = []string{strconv.Itoa(s.tpmLimit)}
		h[hRemTok] = []string{strconv.Itoa(rem)}
		h[hResetTok] = []string{FormatDuration(s.tpmReset)}
	}
}
