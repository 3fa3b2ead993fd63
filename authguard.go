package openairelay

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Wrong or missing client keys are throttled by client address, so that
// keys cannot be guessed at the relay's speed: an address with
// maxAuthFailures failures and no success within authWindow gets 429 until
// the window ends, before its key is even looked at. An address that also
// authenticated in the window is not blocked, so that one client's mistakes
// behind a shared address (a NAT, a proxy) do not lock out the others;
// loopback addresses are never blocked (a local proxy without
// trusted_proxies makes every client one of them).
const (
	maxAuthFailures = 20
	authWindow      = time.Minute
	// maxAuthAddresses bounds the addresses tracked: past it the table
	// starts afresh, so a flood of addresses never grows the relay's memory.
	maxAuthAddresses = 1 << 16
)

type authGuard struct {
	mu     sync.Mutex
	byAddr map[string]*authRecord
	clock  func() time.Time
	// tracked mirrors len(byAddr), so that the common case (no address
	// failing) costs no lock on a request's path.
	tracked atomic.Int64
}

type authRecord struct {
	failures  int
	succeeded bool
	since     time.Time
}

var clientAuthGuard = &authGuard{byAddr: make(map[string]*authRecord), clock: time.Now}

// current returns addr's record for the window now falls in, or nil.
// The caller holds g.mu.
func (g *authGuard) current(addr string, now time.Time) *authRecord {
	r := g.byAddr[addr]
	if r != nil && !now.Before(r.since.Add(authWindow)) {
		delete(g.byAddr, addr)
		g.tracked.Store(int64(len(g.byAddr)))
		return nil
	}
	return r
}

// blocked reports whether addr is to be refused, and until when.
func (g *authGuard) blocked(addr string) (time.Time, bool) {
	if g.tracked.Load() == 0 || isLoopback(addr) {
		return time.Time{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.current(addr, g.clock())
	if r == nil || r.succeeded || r.failures < maxAuthFailures {
		return time.Time{}, false
	}
	return r.since.Add(authWindow), true
}

// record counts an authentication of addr, failed or not.
func (g *authGuard) record(addr string, ok bool) {
	if (ok && g.tracked.Load() == 0) || isLoopback(addr) {
		return // nothing to remember of a success when no address is failing
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock()
	r := g.current(addr, now)
	if r == nil {
		if ok {
			return // nothing to remember of an address that only succeeds
		}
		if len(g.byAddr) >= maxAuthAddresses {
			clear(g.byAddr)
		}
		r = &authRecord{since: now}
		g.byAddr[addr] = r
		g.tracked.Store(int64(len(g.byAddr)))
	}
	if ok {
		r.succeeded = true
	} else {
		r.failures++
	}
}

func isLoopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

// clientAddress is the request's client IP as Caddy determined it (through
// trusted proxies), else the connection's remote address.
func clientAddress(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// errAuthThrottled answers an address that failed too often.
func errAuthThrottled(until time.Time) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "invalid_request_error", Code: "too_many_auth_failures",
		RetryAfter: max(time.Until(until), time.Second),
		Message:    "Too many requests with a wrong or missing API key from this address: try again later."}
}
