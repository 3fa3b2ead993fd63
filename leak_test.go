// Leaks: the harness that finds goroutines and requests in flight left
// behind (relayGoroutines, settleGoroutines, settleInFlight), and the tests
// of clients that trickle, stall or vanish mid-request, or announce bodies
// they never send, none of which may pin a goroutine, a key's capacity or
// memory.

package openairelay_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// trickleReader gives its data a few bytes at a time, pausing between reads.
type trickleReader struct {
	data  []byte
	step  int
	pause time.Duration
}

func (r *trickleReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	n := copy(p[:min(len(p), r.step)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// relayGoroutines returns the stacks of the goroutines running the relay's
// own code, by the relay function nearest to the bottom of each stack (what
// the goroutine is for, whatever it is doing at the moment: the snapshot
// writer is the same goroutine sleeping or saving; the fake upstream and the
// tests are not the relay).
func relayGoroutines() map[string][]string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string][]string{}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		fn := ""
		for line := range strings.SplitSeq(g, "\n") {
			if !strings.HasPrefix(line, "github.com/caddyrelay/openairelay") ||
				strings.HasPrefix(line, "github.com/caddyrelay/openairelay_test") ||
				strings.HasPrefix(line, "github.com/caddyrelay/openairelay/internal/fakeopenai") {
				continue
			}
			fn = line
			if i := strings.LastIndexByte(fn, '('); i > 0 {
				fn = fn[:i] // the arguments
			}
		}
		if fn != "" {
			out[fn] = append(out[fn], g)
		}
	}
	return out
}

// relayLeaks returns the stacks of relay goroutines beyond those of the
// baseline, function by function: the relay's background loops (one prober
// per config, ...) are in the baseline, and a config that replaced another
// has the same number; a request's goroutines must all be gone.
func relayLeaks(baseline map[string][]string) []string {
	var out []string
	for fn, stacks := range relayGoroutines() {
		if extra := len(stacks) - len(baseline[fn]); extra > 0 {
			out = append(out, stacks[:extra]...)
		}
	}
	return out
}

// settleGoroutines waits (up to wait) for the goroutine count to come back to
// at most limit and for no relay goroutine to be left beyond the baseline;
// it returns the last count and the relay goroutines left.
func settleGoroutines(limit int, baseline map[string][]string, wait time.Duration) (int, []string) {
	deadline := time.Now().Add(wait)
	for {
		n, left := runtime.NumGoroutine(), relayLeaks(baseline)
		if (n <= limit && len(left) == 0) || time.Now().After(deadline) {
			return n, left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inFlight is the sum of limits.in_flight over every key of the admin API.
func inFlight(t *testing.T) int64 {
	var keys []struct {
		Limits struct {
			InFlight int64 `json:"in_flight"`
		} `json:"limits"`
	}
	adminGet(t, "/openai_relay/keys", &keys)
	var n int64
	for _, k := range keys {
		n += k.Limits.InFlight
	}
	return n
}

// settleInFlight waits (up to wait) for no request to be in flight on any
// key, and returns what is left.
func settleInFlight(t *testing.T, wait time.Duration) int64 {
	return settleInFlightTo(t, 0, wait)
}

// settleInFlightTo waits (up to wait) for at most target requests to be in
// flight over every key, and returns how many are.
func settleInFlightTo(t *testing.T, target int64, wait time.Duration) int64 {
	deadline := time.Now().Add(wait)
	for {
		n := inFlight(t)
		if n <= target || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBadInputSlowAndVanishingClients(t *testing.T) {
	f := newBadFixture(t, "slow", fakeopenai.Options{StreamChunks: 40, ChunkDelay: 100 * time.Millisecond}, badBlocks{})

	t.Run("body trickled over a second", func(t *testing.T) {
		for _, known := range []bool{false, true} {
			prompt := fmt.Sprintf("slowly sent, length known %v", known)
			body := validBody(prompt)
			tr := &trickleReader{data: body, step: max(1, len(body)/25), pause: 40 * time.Millisecond}
			req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions", tr)
			if known {
				req.ContentLength = int64(len(body))
			}
			req.Header.Set("Authorization", "Bearer "+f.clientKey)
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			r := f.do(req)
			if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("echo: "+prompt)) {
				t.Errorf("a slow client (length known %v) got %s", known, r)
			}
			if el := time.Since(start); el < 900*time.Millisecond {
				t.Errorf("the body took %v; the reader did not trickle", el)
			}
		}
	})

	// Warm up, then take the goroutine count the disconnects must return to.
	f.assertStillServes("the warm-up")
	f.client.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	baseline, relayBaseline := runtime.NumGoroutine(), relayGoroutines()

	t.Run("disconnect mid-body", func(t *testing.T) {
		m := f.mark()
		body := validBody(strings.Repeat("never finished ", 40))
		for i := range 20 {
			conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var req []byte
			if i%2 == 0 {
				req = f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body[:len(body)/2])
			} else {
				c := chunked(body, 64)
				req = f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Transfer-Encoding: chunked"}, c[:len(c)/2])
			}
			if _, err := conn.Write(req); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			conn.Close()
		}
		time.Sleep(300 * time.Millisecond)
		f.assertNothingUpstream(m, "clients that left mid-body")
		n, left := settleGoroutines(baseline+3, relayBaseline, 5*time.Second)
		if n > baseline+3 || len(left) > 0 {
			t.Errorf("after 20 clients left mid-body: %d goroutines (baseline %d); relay goroutines left:\n%s",
				n, baseline, strings.Join(left[:min(5, len(left))], "\n\n"))
		}
	})

	t.Run("disconnect while the upstream is slow to answer", func(t *testing.T) {
		f.fake.AddFault(fakeopenai.Fault{Latency: 4 * time.Second, Count: 1, Key: f.upKey})
		recsBefore := len(f.fake.Records())
		body := validBody("waiting for headers")
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		conn.Close()
		left := time.Now()
		recs := waitRecords(f.fake, recsBefore+1)
		if len(recs) <= recsBefore {
			t.Fatal("the upstream request was still running 2s after the client left (its answer was due in 4s)")
		}
		if st := recs[len(recs)-1].Status; st != 499 {
			t.Errorf("the upstream's record has status %d; want 499 (its client, the relay, went away)", st)
		}
		t.Logf("upstream request ended %v after the client left", time.Since(left).Round(time.Millisecond))
	})

	t.Run("disconnect mid-stream", func(t *testing.T) {
		recsBefore := len(f.fake.Records())
		body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a long story told slowly"}]}`)
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(f.rawRequest("POST", "/v1/chat/completions", []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(body))}, body)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %d", resp.StatusCode)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: ") {
			t.Fatalf("first line %q, %v", line, err)
		}
		start := time.Now()
		conn.Close()
		// The stream takes 4s upstream (40 chunks, 100ms apart); the fake
		// records it when its handler returns.
		recs := waitRecords(f.fake, recsBefore+1)
		if len(recs) <= recsBefore {
			t.Fatal("the upstream stream was still running 2s after the client left")
		}
		t.Logf("upstream stream ended %v after the client left", time.Since(start).Round(time.Millisecond))
	})

	// Whatever left: no request in flight on the key, no goroutine left.
	if n := settleInFlight(t, 3*time.Second); n != 0 {
		t.Errorf("%d requests still in flight 3s after every client left", n)
	}
	f.assertStillServes("clients that left")
	f.client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	n, left := settleGoroutines(baseline+3, relayBaseline, 5*time.Second)
	if n > baseline+3 || len(left) > 0 {
		t.Errorf("after the vanishing clients: %d goroutines (baseline %d); relay goroutines left:\n%s",
			n, baseline, strings.Join(left[:min(5, len(left))], "\n\n"))
	}
}

// Clients that announce a large body (within max_body_size) and then send it
// slowly, or never, must not make the relay hold memory for bytes it has not
// received: 8 such clients announcing 8 MiB each would otherwise pin 64 MiB
// (and 100 clients at the default 32 MiB limit, 3.2 GiB). Caddy runs in this
// process, so its heap is measured directly.
func TestBadInputAnnouncedBodyDoesNotPinMemory(t *testing.T) {
	f := newBadFixture(t, "announce", fakeopenai.Options{}, badBlocks{relay: "max_body_size 8MiB"})
	const clients, announced = 8, 8 << 20
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	m := f.mark()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		req := f.rawRequest("POST", "/v1/chat/completions",
			[]string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(announced)}, []byte(`{"model":`))
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
	}
	// Let every request reach the relay and start reading its body.
	time.Sleep(500 * time.Millisecond)
	grown := int64(heap()) - int64(before)
	t.Logf("%d clients announcing %d MiB each and sending 9 bytes: heap grew by %.1f MiB",
		clients, announced>>20, float64(grown)/(1<<20))
	if grown > 16<<20 {
		t.Errorf("the heap grew by %.0f MiB for %d clients that sent 9 bytes each: the relay allocates the announced Content-Length up front",
			float64(grown)/(1<<20), clients)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	time.Sleep(200 * time.Millisecond)
	f.assertNothingUpstream(m, "clients that announced large bodies")
	f.assertStillServes("clients that announced large bodies")
}
