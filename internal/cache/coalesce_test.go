package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// readAll reads a follower to the end.
func readAll(ctx context.Context, fl *Follower) ([]byte, error) {
	var b []byte
	for {
		p, err := fl.Next(ctx)
		b = append(b, p...)
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// checkNoLeak fails if goroutines started during the test are still running.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

// request is what a handler does with the group: lead and stream the answer, or
// follow and read it. It returns the bytes obtained and whether it led.
func request(ctx context.Context, g *Group, k Key, lead func(*Flight)) ([]byte, bool, error) {
	for {
		f, leader := g.Join(k)
		if leader {
			lead(f)
			return f.Body(), true, nil
		}
		fl, err := f.Follow(ctx)
		if errors.Is(err, ErrLeaderGone) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		b, err := readAll(ctx, fl)
		return b, false, err
	}
}

func TestGroupOneLeader(t *testing.T) {
	checkNoLeak(t)
	var g Group
	k := key("same")
	var leaders atomic.Int32
	var want []byte
	for i := range 20 {
		want = append(want, fmt.Sprintf("data: chunk %d\n\n", i)...)
	}
	release := make(chan struct{})
	lead := func(f *Flight) {
		leaders.Add(1)
		<-release // let everyone join while the leader is in flight
		f.Start(200, http.Header{"Content-Type": {"text/event-stream"}})
		for i := range 20 {
			f.Write(fmt.Appendf(nil, "data: chunk %d\n\n", i))
			runtime.Gosched()
		}
		f.Finish()
	}
	const n = 50
	results := make([][]byte, n)
	var joined, wg sync.WaitGroup // joined only speeds the start up
	joined.Add(n)
	for i := range n {
		wg.Go(func() {
			joined.Done()
			b, _, err := request(context.Background(), &g, k, lead)
			if err != nil {
				t.Error(err)
			}
			results[i] = b
		})
	}
	joined.Wait()
	followers := func() int {
		g.mu.Lock()
		f := g.flights[k]
		g.mu.Unlock()
		if f == nil {
			return 0
		}
		return f.Followers()
	}
	for followers() < n-1 { // everyone joined the leader's flight
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := leaders.Load(); got != 1 {
		t.Errorf("%d leaders, want 1", got)
	}
	for i, b := range results {
		if !bytes.Equal(b, want) {
			t.Errorf("request %d got %q", i, b)
		}
	}
	if g.InFlight() != 0 {
		t.Error("flight still in the group after Finish")
	}
}

func TestGroupLateJoiner(t *testing.T) {
	var g Group
	k := key("late")
	f, leader := g.Join(k)
	if !leader {
		t.Fatal("first Join is not the leader")
	}
	f.Start(200, http.Header{"X": {"1"}})
	f.Write([]byte("abc"))
	f.Write([]byte("def"))

	f2, leader := g.Join(k)
	if leader || f2 != f {
		t.Fatal("second Join did not follow")
	}
	fl, err := f2.Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fl.Status() != 200 || fl.Header().Get("X") != "1" {
		t.Errorf("status %d header %v", fl.Status(), fl.Header())
	}
	p, err := fl.Next(context.Background())
	if string(p) != "abcdef" || err != nil {
		t.Fatalf("late joiner got %q, %v", p, err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		f.Write([]byte("ghi"))
		f.Finish()
	}()
	rest, err := readAll(context.Background(), fl)
	if string(rest) != "ghi" || err != nil {
		t.Errorf("then got %q, %v", rest, err)
	}
	if string(f.Body()) != "abcdefghi" {
		t.Errorf("Body = %q", f.Body())
	}
	// After Finish the key starts a new flight.
	if _, leader := g.Join(k); !leader {
		t.Error("Join after Finish did not lead")
	}
}

func TestGroupHeaderCopied(t *testing.T) {
	var g Group
	f, _ := g.Join(key("h"))
	g.Join(key("h"))
	h := http.Header{"Content-Type": {"application/json"}}
	f.Start(200, h)
	h.Set("X-Relay-Cache", "MISS") // the leader goes on with its own header
	fl, err := f.Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fl.Header().Get("X-Relay-Cache") != "" {
		t.Error("follower sees the leader's later header changes")
	}
	f.Finish()
}

func TestGroupAbandonPromotesOne(t *testing.T) {
	checkNoLeak(t)
	var g Group
	k := key("abandon")
	f, _ := g.Join(k)
	const n = 30
	var leaders atomic.Int32
	var wg sync.WaitGroup
	results := make([][]byte, n)
	var ready sync.WaitGroup
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			// Join as followers of the first leader before it gives up.
			f1, leader := g.Join(k)
			if leader {
				t.Error("joined as leader while one is in flight")
				return
			}
			ready.Done()
			_, err := f1.Follow(context.Background())
			if !errors.Is(err, ErrLeaderGone) {
				t.Errorf("Follow: %v, want ErrLeaderGone", err)
				return
			}
			b, _, err := request(context.Background(), &g, k, func(f *Flight) {
				leaders.Add(1)
				time.Sleep(20 * time.Millisecond)
				f.Start(200, nil)
				f.Write([]byte("second answer"))
				f.Finish()
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = b
		})
	}
	ready.Wait()
	if got := f.Followers(); got != n {
		t.Errorf("Followers = %d, want %d", got, n)
	}
	f.Abandon()
	wg.Wait()
	if got := leaders.Load(); got != 1 {
		t.Errorf("%d new leaders, want 1", got)
	}
	for i, b := range results {
		if string(b) != "second answer" {
			t.Errorf("request %d got %q", i, b)
		}
	}
	if f.Followers() != 0 {
		t.Errorf("abandoned flight still counts %d followers", f.Followers())
	}
}

func TestGroupFollowerCancel(t *testing.T) {
	checkNoLeak(t)
	var g Group
	k := key("cancel")
	f, _ := g.Join(k)

	// One follower leaves while waiting for the header, one in the middle of the body.
	early, _ := g.Join(k)
	ctxEarly, cancelEarly := context.WithCancel(context.Background())
	earlyErr := make(chan error, 1)
	go func() {
		_, err := early.Follow(ctxEarly)
		earlyErr <- err
	}()
	mid, _ := g.Join(k)
	stay, _ := g.Join(k)
	if f.Followers() != 3 {
		t.Fatalf("Followers = %d", f.Followers())
	}
	cancelEarly()
	if err := <-earlyErr; !errors.Is(err, context.Canceled) {
		t.Errorf("early follower: %v", err)
	}

	f.Start(200, nil)
	f.Write([]byte("part1 "))
	ctxMid, cancelMid := context.WithCancel(context.Background())
	flMid, err := mid.Follow(ctxMid)
	if err != nil {
		t.Fatal(err)
	}
	flStay, err := stay.Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := flMid.Next(ctxMid); string(p) != "part1 " {
		t.Fatalf("mid got %q", p)
	}
	midErr := make(chan error, 1)
	go func() {
		_, err := flMid.Next(ctxMid) // blocks: nothing new yet
		midErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancelMid()
	if err := <-midErr; !errors.Is(err, context.Canceled) {
		t.Errorf("mid follower: %v", err)
	}
	if got := f.Followers(); got != 1 {
		t.Errorf("Followers = %d after two left, want 1", got)
	}
	f.Write([]byte("part2"))
	f.Finish()
	b, err := readAll(context.Background(), flStay)
	if string(b) != "part1 part2" || err != nil {
		t.Errorf("remaining follower got %q, %v", b, err)
	}
	if f.Followers() != 0 {
		t.Errorf("Followers = %d after the end", f.Followers())
	}
}

func TestGroupFailBody(t *testing.T) {
	var g Group
	k := key("fail")
	f, _ := g.Join(k)
	g.Join(k)
	f.Start(200, nil)
	f.Write([]byte("partial"))
	fl, err := f.Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("upstream reset")
	f.FailBody(boom)
	f.Write([]byte("ignored"))
	f.Finish() // no effect after FailBody
	b, err := readAll(context.Background(), fl)
	if string(b) != "partial" || !errors.Is(err, boom) {
		t.Errorf("got %q, %v", b, err)
	}
	if _, leader := g.Join(k); !leader {
		t.Error("failed flight still in the group")
	}
}

func TestGroupEndWithoutStart(t *testing.T) {
	for name, end := range map[string]func(*Flight){
		"Finish":   (*Flight).Finish,
		"FailBody": func(f *Flight) { f.FailBody(errors.New("x")) },
		"Abandon":  (*Flight).Abandon,
	} {
		var g Group
		f, _ := g.Join(key(name))
		g.Join(key(name))
		end(f)
		if _, err := f.Follow(context.Background()); !errors.Is(err, ErrLeaderGone) {
			t.Errorf("%s before Start: follower got %v, want ErrLeaderGone", name, err)
		}
	}
}

func TestGroupAbandonAfterStart(t *testing.T) {
	var g Group
	f, _ := g.Join(key("a"))
	g.Join(key("a"))
	f.Start(200, nil)
	fl, _ := f.Follow(context.Background())
	f.Abandon()
	if _, err := readAll(context.Background(), fl); !errors.Is(err, ErrLeaderGone) {
		t.Errorf("got %v, want ErrLeaderGone", err)
	}
}

func TestGroupSlowFollowerDoesNotBlock(t *testing.T) {
	var g Group
	f, _ := g.Join(key("slow"))
	g.Join(key("slow"))
	f.Start(200, nil)
	fl, _ := f.Follow(context.Background())
	done := make(chan struct{})
	go func() {
		for range 10000 {
			f.Write([]byte("0123456789"))
		}
		f.Finish()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("leader blocked by a follower that does not read")
	}
	b, err := readAll(context.Background(), fl)
	if len(b) != 100000 || err != nil {
		t.Errorf("got %d bytes, %v", len(b), err)
	}
}

func BenchmarkGroupFanOut(b *testing.B) {
	chunk := bytes.Repeat([]byte("x"), 200)
	b.ReportAllocs()
	for b.Loop() {
		var g Group
		f, _ := g.Join(key("b"))
		var wg sync.WaitGroup
		for range 8 {
			f2, _ := g.Join(key("b"))
			wg.Go(func() {
				fl, err := f2.Follow(context.Background())
				if err == nil {
					readAll(context.Background(), fl)
				}
			})
		}
		f.Start(200, nil)
		for range 100 {
			f.Write(chunk)
		}
		f.Finish()
		wg.Wait()
	}
}

func TestFlightStopsBufferingPastItsLimit(t *testing.T) {
	var g Group
	k := Key{7}
	f, leader := g.Join(k)
	if !leader {
		t.Fatal("first Join is not the leader")
	}
	f.SetLimit(10)
	f.Start(200, nil)
	f.Write([]byte("12345"))
	f.Write([]byte("678901"))
	if !f.Overflowed() || len(f.Body()) != 0 {
		t.Fatalf("overflowed %v, body %q; want the flight to drop its bytes with no follower", f.Overflowed(), f.Body())
	}
	if _, leader := g.Join(k); !leader {
		t.Error("a request after the overflow joined the big flight; want a flight of its own")
	}
	f.Finish()

	// A follower already reading keeps receiving everything.
	var g2 Group
	f2, _ := g2.Join(k)
	f2.SetLimit(4)
	fol, _ := g2.Join(k)
	f2.Start(200, nil)
	rd, err := fol.Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f2.Write([]byte("abc"))
	f2.Write([]byte("defg"))
	f2.Finish()
	var got []byte
	for {
		p, err := rd.Next(context.Background())
		got = append(got, p...)
		if err != nil {
			break
		}
	}
	if string(got) != "abcdefg" {
		t.Errorf("follower read %q; want the whole body", got)
	}
}
