package openairelay

import (
	"fmt"
	"testing"
	"time"
)

func TestAuthGuard(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := &authGuard{byAddr: make(map[string]*authRecord), clock: func() time.Time { return now }}
	const guesser, shared, local = "192.0.2.1", "192.0.2.2", "127.0.0.1"
	for i := range maxAuthFailures {
		if _, blocked := g.blocked(guesser); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		g.record(guesser, false)
		g.record(shared, false)
		g.record(local, false)
	}
	until, blocked := g.blocked(guesser)
	if !blocked || !until.Equal(now.Add(authWindow)) {
		t.Fatalf("after %d failures: blocked %v until %v; want blocked for the window", maxAuthFailures, blocked, until)
	}
	// An address where some client authenticates is not locked out.
	g.record(shared, true)
	if _, blocked := g.blocked(shared); blocked {
		t.Error("an address with a success in the window is blocked")
	}
	if _, blocked := g.blocked(local); blocked {
		t.Error("a loopback address is blocked")
	}
	if _, blocked := g.blocked("192.0.2.3"); blocked {
		t.Error("another address is blocked")
	}
	now = now.Add(authWindow)
	if _, blocked := g.blocked(guesser); blocked {
		t.Error("still blocked after the window")
	}
	// A flood of addresses does not grow the table past its bound.
	for i := range maxAuthAddresses + 10 {
		g.record(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), false)
	}
	if n := len(g.byAddr); n > maxAuthAddresses {
		t.Errorf("%d addresses tracked; bound %d", n, maxAuthAddresses)
	}
}
