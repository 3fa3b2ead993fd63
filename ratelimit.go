package openairelay

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// Limits are the rate limits of a key, a limit group or a client. Zero means
// no limit of that kind.
type Limits struct {
	// RPM is the number of requests per minute, a token bucket refilling
	// continuously. Default: unlimited (for a key: learned from the
	// upstream's x-ratelimit-limit-requests).
	RPM int64 `json:"rpm,omitempty"`

	// TPM is the number of tokens per minute (prompt estimate plus
	// completion allowance, corrected by the real usage afterwards).
	// Default: unlimited (for a key: learned from x-ratelimit-limit-tokens).
	TPM int64 `json:"tpm,omitempty"`

	// RPD is the number of requests per UTC day. Default: unlimited.
	RPD int64 `json:"rpd,omitempty"`

	// TPD is the number of tokens per UTC day. Default: unlimited.
	TPD int64 `json:"tpd,omitempty"`

	// MaxConcurrent caps the requests in flight. Default: unlimited.
	MaxConcurrent int64 `json:"max_concurrent,omitempty"`

	// Burst is the window whose worth of RPM and TPM a bucket holds: OpenAI
	// enforces minute limits over shorter windows, so a full minute's worth
	// at once would be refused. Default: 900ms for upstream keys (a tenth
	// below OpenAI's one-second window, as a margin for network jitter), 1s
	// for clients.
	Burst caddy.Duration `json:"burst,omitempty"`
}

// orDefaults fills the limits this one leaves unset from d.
func (l Limits) orDefaults(d Limits) Limits {
	if l.RPM == 0 {
		l.RPM = d.RPM
	}
	if l.TPM == 0 {
		l.TPM = d.TPM
	}
	if l.RPD == 0 {
		l.RPD = d.RPD
	}
	if l.TPD == 0 {
		l.TPD = d.TPD
	}
	if l.MaxConcurrent == 0 {
		l.MaxConcurrent = d.MaxConcurrent
	}
	if l.Burst == 0 {
		l.Burst = d.Burst
	}
	return l
}

func (l Limits) validate() error {
	if l.RPM < 0 || l.TPM < 0 || l.RPD < 0 || l.TPD < 0 || l.MaxConcurrent < 0 || l.Burst < 0 {
		return fmt.Errorf("limits must not be negative")
	}
	return nil
}

func (l Limits) core() limit.Limits {
	return limit.Limits{RPM: l.RPM, TPM: l.TPM, RPD: l.RPD, TPD: l.TPD,
		MaxConcurrent: l.MaxConcurrent, Burst: time.Duration(l.Burst)}
}

// sharedLimiter is a limiter in limiterStates.
type sharedLimiter struct{ *limit.Limiter }

// Destruct implements caddy.Destructor.
func (sharedLimiter) Destruct() error { return nil }

// Priorities of queued requests: higher is served first.
const (
	priorityLow    = 0
	priorityNormal = 1
	priorityHigh   = 2
)

func parsePriority(s string) (int, bool) {
	switch s {
	case "low":
		return priorityLow, true
	case "", "normal":
		return priorityNormal, true
	case "high":
		return priorityHigh, true
	}
	return 0, false
}

// requestPriority is the client's priority, lowered (never raised) by an
// X-Relay-Priority request header.
func requestPriority(c *Client, h http.Header) int {
	p := c.priority
	if v := h.Get("X-Relay-Priority"); v != "" {
		if asked, ok := parsePriority(v); ok && asked < p {
			p = asked
		}
	}
	return p
}

// setClientRateLimitHeaders reports the client's own limits in OpenAI's
// headers, so SDKs and clients that pace themselves by them see the limits
// that apply to them, not those of an upstream key. As OpenAI's do, the
// figures are per minute: remaining is the limit less what is consumed and
// not yet refilled, and reset the time until the bucket is full again.
func setClientRateLimitHeaders(h http.Header, l *limit.Limiter, now time.Time) {
	st := l.Status(now)
	set := func(kind string, limit int64, backlog time.Duration) {
		if limit <= 0 {
			return
		}
		used := (int64(backlog)*limit + int64(time.Minute) - 1) / int64(time.Minute)
		h.Set("X-Ratelimit-Limit-"+kind, strconv.FormatInt(limit, 10))
		h.Set("X-Ratelimit-Remaining-"+kind, strconv.FormatInt(max(limit-used, 0), 10))
		h.Set("X-Ratelimit-Reset-"+kind, formatReset(backlog))
	}
	set("Requests", st.Limits.RPM, st.ResetRequests)
	set("Tokens", st.Limits.TPM, st.ResetTokens)
}

// formatReset writes a duration as OpenAI does: "1s", "6m0s", "20ms".
func formatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if d < time.Second {
		return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
	}
	return d.Round(time.Millisecond).String()
}
