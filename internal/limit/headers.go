package limit

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Response headers, in canonical form so that lookups are plain map reads.
const (
	hdrLimitRequests     = "X-Ratelimit-Limit-Requests"
	hdrLimitTokens       = "X-Ratelimit-Limit-Tokens"
	hdrRemainingRequests = "X-Ratelimit-Remaining-Requests"
	hdrRemainingTokens   = "X-Ratelimit-Remaining-Tokens"
	hdrResetRequests     = "X-Ratelimit-Reset-Requests"
	hdrResetTokens       = "X-Ratelimit-Reset-Tokens"
	hdrRetryAfterMs      = "Retry-After-Ms"
	hdrRetryAfter        = "Retry-After"
)

// header returns the first value of a canonical header key.
func header(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// headerCount parses a non-negative count. Some compatible APIs send counts
// as decimals; the fraction is dropped.
func headerCount(h http.Header, key string) (int64, bool) {
	v := header(h, key)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n, n >= 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 0 && f < math.MaxInt64) {
		return 0, false
	}
	return int64(f), true
}

// Units for ParseResetDuration, longest spelling first where one is a prefix of another.
var resetUnits = [...]struct {
	name string
	ns   float64
}{
	{"ns", 1},
	{"us", 1e3},
	{"µs", 1e3}, // U+00B5 MICRO SIGN, as time.Duration.String writes it
	{"μs", 1e3}, // U+03BC GREEK SMALL LETTER MU
	{"ms", 1e6},
	{"s", 1e9},
	{"m", 60e9},
	{"h", 3600e9},
	{"d", 86400e9},
}

// ParseResetDuration parses the x-ratelimit-reset-* values OpenAI sends,
// which are Go duration strings such as "1s", "6m0s", "1.5s", "20ms",
// "1m30.5s" or "2h0m0s", and also a bare number of seconds ("12", "0.5") as
// some compatible APIs send. A "d" unit (days) is accepted too. Signs are not:
// a reset is never negative. It does not allocate.
func ParseResetDuration(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	var total float64
	for first := true; s != ""; first = false {
		v, rest, ok := leadingNumber(s)
		if !ok {
			return 0, false
		}
		if rest == "" {
			if !first {
				return 0, false // "1m30" is ambiguous, not a bare number
			}
			total = v * 1e9
			break
		}
		var unit float64
		for _, u := range resetUnits {
			if strings.HasPrefix(rest, u.name) {
				unit, rest = u.ns, rest[len(u.name):]
				break
			}
		}
		if unit == 0 {
			return 0, false
		}
		total += v * unit
		s = rest
	}
	if !(total < math.MaxInt64) {
		return 0, false
	}
	return time.Duration(math.Round(total)), true
}

// leadingNumber parses an unsigned decimal (digits, an optional fraction) at
// the start of s, and returns the rest of s.
func leadingNumber(s string) (float64, string, bool) {
	var v float64
	i, digits := 0, 0
	for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
		v = v*10 + float64(s[i]-'0')
		digits++
	}
	if i < len(s) && s[i] == '.' {
		i++
		scale := 0.1
		for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
			v += float64(s[i]-'0') * scale
			scale /= 10
			digits++
		}
	}
	return v, s[i:], digits > 0
}

// RetryAfter reads when a rate-limited (429) response says to try again:
// retry-after-ms, else Retry-After (seconds or an HTTP date), else the later
// of x-ratelimit-reset-requests and x-ratelimit-reset-tokens, counting each
// only if its x-ratelimit-remaining-* is 0 or absent. The result is never
// before now. ok is false when none of these is present and usable.
func RetryAfter(h http.Header, now time.Time) (time.Time, bool) {
	if v := header(h, hdrRetryAfterMs); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms < 1e15 {
			return now.Add(time.Duration(ms * 1e6)), true
		}
	}
	if v := header(h, hdrRetryAfter); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil {
			if secs >= 0 && secs < 1e9 {
				return now.Add(time.Duration(secs * 1e9)), true
			}
		} else if t, err := http.ParseTime(v); err == nil {
			if t.Before(now) {
				return now, true
			}
			return t, true
		}
	}
	var wait time.Duration
	found := false
	for _, dim := range [...]struct{ remaining, reset string }{
		{hdrRemainingRequests, hdrResetRequests},
		{hdrRemainingTokens, hdrResetTokens},
	} {
		if rem, known := headerCount(h, dim.remaining); known && rem > 0 {
			continue
		}
		if d, ok := ParseResetDuration(header(h, dim.reset)); ok {
			wait, found = max(wait, d), true
		}
	}
	if !found {
		return time.Time{}, false
	}
	return now.Add(wait), true
}

// learned is what one response's headers say about one dimension.
type learned struct {
	limit, remaining       int64
	reset                  time.Duration
	hasLimit, hasRemaining bool
	hasReset               bool
}

func readDimension(h http.Header, limitKey, remainingKey, resetKey string) learned {
	var d learned
	d.limit, d.hasLimit = headerCount(h, limitKey)
	d.hasLimit = d.hasLimit && d.limit > 0
	d.remaining, d.hasRemaining = headerCount(h, remainingKey)
	if v := header(h, resetKey); v != "" {
		d.reset, d.hasReset = ParseResetDuration(v)
	}
	return d
}

// Learn feeds the upstream's x-ratelimit-* response headers into the
// limiter, as of now (see LearnAsOf).
func (l *Limiter) Learn(now time.Time, h http.Header) { l.LearnAsOf(now, now, h) }

// LearnAsOf feeds the upstream's x-ratelimit-* response headers, which
// describe the key as of asOf (when the request they answer reached the
// upstream), into the limiter at now. x-ratelimit-limit-requests and -tokens
// become the learned RPM and TPM, in force where none is configured.
// x-ratelimit-remaining-* and -reset-* are the minute's allowance: what it
// lacks (limit - remaining) pulls the matching bucket down, never up, to be
// full no earlier than asOf plus its refill (see the package doc). A
// dimension with neither a configured nor a learned limit is not modelled.
func (l *Limiter) LearnAsOf(asOf, now time.Time, h http.Header) {
	rq, tk, ok := readHeaders(h)
	if !ok {
		return
	}
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen(t)
	l.applyRaise(t, l.learnRaise(asOf, now, rq, tk))
}
