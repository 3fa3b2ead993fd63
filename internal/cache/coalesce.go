package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
)

// ErrLeaderGone is returned to followers whose leader gave up before answering. The
// follower should Join again: exactly one of the followers that do so becomes the new
// leader, and the others follow it.
var ErrLeaderGone = errors.New("cache: coalesced request's leader gave up")

// Group coalesces identical requests in flight. The first request for a key becomes
// the leader and calls upstream; the ones that arrive while it is in flight follow it
// and receive the same status, header and body, streamed as the leader receives it.
// The zero Group is ready to use. It starts no goroutine: followers wait in their own.
type Group struct {
	mu      sync.Mutex
	flights map[Key]*Flight
}

// Join returns the flight for k. With leader true the caller must perform the request
// and publish it through the Flight's leader methods, ending with Finish, FailBody or
// Abandon. Otherwise the caller follows: it must call Follow and then read the body
// until Next returns an error, or Close the Follower.
func (g *Group) Join(k Key) (f *Flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.flights[k]; f != nil {
		f.mu.Lock()
		f.followers++
		f.mu.Unlock()
		return f, false
	}
	if g.flights == nil {
		g.flights = make(map[Key]*Flight)
	}
	f = &Flight{g: g, key: k, changed: make(chan struct{})}
	g.flights[k] = f
	return f, true
}

// InFlight returns the number of keys with a request in flight.
func (g *Group) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.flights)
}

// leave removes f from the group, so that the next Join for its key starts a new
// flight, unless a newer flight already took its place.
func (g *Group) leave(f *Flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.flights[f.key] == f {
		delete(g.flights, f.key)
	}
}

type flightState uint8

const (
	waiting   flightState = iota // before Start
	streaming                    // Start called, body arriving
	finished                     // Finish called
	failed                       // FailBody called after Start
	abandoned                    // Abandon called before Start
)

// Flight is one request in flight and the answer its leader publishes. The body is kept
// in one growing buffer that followers read at their own pace, so a slow follower
// never holds up the leader or the others.
type Flight struct {
	g   *Group
	key Key

	mu        sync.Mutex
	state     flightState
	status    int
	header    http.Header
	body      []byte
	err       error
	followers int
	// limit bounds body (0: none). Past it the flight takes no more
	// followers, and keeps bytes only while a follower still reads them.
	limit    int
	overflow bool
	// changed is closed, and replaced, when the flight changes while followers wait
	// on it: a broadcast that works with select and contexts.
	changed chan struct{}
	watched bool // someone waits on changed
}

// signal wakes the followers waiting for a change. Called with f.mu held.
func (f *Flight) signal() {
	if f.watched {
		close(f.changed)
		f.changed = make(chan struct{})
		f.watched = false
	}
}

// Start publishes the response status and header. The header is copied.
func (f *Flight) Start(status int, h http.Header) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != waiting {
		return
	}
	f.state, f.status, f.header = streaming, status, h.Clone()
	f.signal()
}

// Write publishes body bytes as they arrive. It copies p and never blocks on followers.
// Writes outside Start and Finish are ignored.
func (f *Flight) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	f.mu.Lock()
	if f.state != streaming {
		f.mu.Unlock()
		return
	}
	overflowed := false
	if f.limit > 0 && !f.overflow && len(f.body)+len(p) > f.limit {
		// Too large to share whole: later identical requests start their
		// own flight, and the bytes stay only for followers already here.
		f.overflow, overflowed = true, true
	}
	if f.overflow && f.followers == 0 {
		f.body = nil
	} else {
		f.body = append(f.body, p...)
		f.signal()
	}
	f.mu.Unlock()
	if overflowed {
		f.g.leave(f) // after f.mu: Join locks the group first
	}
}

// SetLimit bounds what the flight buffers to n bytes (see Write).
func (f *Flight) SetLimit(n int) {
	f.mu.Lock()
	f.limit = n
	f.mu.Unlock()
}

// Overflowed reports whether the body outgrew the limit: Body is then not
// the whole answer.
func (f *Flight) Overflowed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.overflow
}

// Finish marks the body complete. The flight leaves the group, so later requests start
// a new one: store the answer before calling Finish, so that they find it instead.
func (f *Flight) Finish() {
	f.end(finished, nil)
}

// FailBody reports that the leader lost the upstream in the middle of the body.
// Followers receive what was written and then err. Before Start, it is Abandon.
func (f *Flight) FailBody(err error) {
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	f.end(failed, err)
}

// Abandon withdraws the leader before it answered (it failed, or wants no followers
// for this answer). Waiting followers receive ErrLeaderGone from Follow and should
// Join again. After Start it is FailBody(ErrLeaderGone): followers may have written
// the header already.
func (f *Flight) Abandon() {
	f.end(abandoned, ErrLeaderGone)
}

func (f *Flight) end(state flightState, err error) {
	f.mu.Lock()
	switch {
	case f.state == waiting:
		// Nothing was answered, not even by Finish without Start: the followers
		// must not take an empty answer, they retry.
		state, err = abandoned, ErrLeaderGone
	case f.state == streaming:
		if state == abandoned {
			state = failed
		}
	default:
		f.mu.Unlock()
		return // already over
	}
	f.state, f.err = state, err
	f.signal()
	f.mu.Unlock()
	f.g.leave(f)
}

// Followers returns the number of followers still attached: joined, and not yet done
// reading or gone. A leader whose own client went away may keep going for them.
func (f *Flight) Followers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.followers
}

// Body returns the body written so far. After Finish it is the whole answer, ready to
// be stored; it must not be modified.
func (f *Flight) Body() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.body[:len(f.body):len(f.body)]
}

// detach drops one follower from the count. Called with f.mu held.
func (f *Flight) detach() {
	if f.followers > 0 {
		f.followers--
	}
}

// wait returns a channel closed at the flight's next change. Called with f.mu held.
func (f *Flight) wait() <-chan struct{} {
	f.watched = true
	return f.changed
}

// Follow waits for the leader's response header. It returns ErrLeaderGone if the leader
// abandoned the request (Join again), or ctx.Err() if ctx ends first, in which case
// the follower has left.
func (f *Flight) Follow(ctx context.Context) (*Follower, error) {
	f.mu.Lock()
	for f.state == waiting {
		ch := f.wait()
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			f.mu.Lock()
			f.detach()
			f.mu.Unlock()
			return nil, ctx.Err()
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	if f.state == abandoned {
		f.detach()
		return nil, ErrLeaderGone
	}
	return &Follower{f: f, status: f.status, header: f.header}, nil
}

// Follower reads a flight's answer from the beginning. It is used by one goroutine.
type Follower struct {
	f      *Flight
	status int
	header http.Header
	off    int
	done   bool
}

// Status returns the response status code.
func (fl *Follower) Status() int { return fl.status }

// Header returns the response header. It is shared by all followers and must not be
// modified.
func (fl *Follower) Header() http.Header { return fl.header }

// Next returns the next body bytes, in order from the beginning: a follower that joins
// late first receives everything already written. It waits for more when there is
// none, and returns io.EOF after Finish, the leader's error after FailBody (once the
// bytes written before it are read), or ctx.Err() when ctx ends (the follower has then
// left; the others are not affected). The bytes are shared and must not be modified.
func (fl *Follower) Next(ctx context.Context) ([]byte, error) {
	if fl.done {
		return nil, io.EOF
	}
	f := fl.f
	f.mu.Lock()
	for {
		if fl.off < len(f.body) {
			// Safe to hand out without copying: the buffer is only ever appended to,
			// so these bytes never change.
			p := f.body[fl.off:len(f.body):len(f.body)]
			fl.off = len(f.body)
			f.mu.Unlock()
			return p, nil
		}
		switch f.state {
		case finished:
			fl.leave()
			f.mu.Unlock()
			return nil, io.EOF
		case failed:
			fl.leave()
			err := f.err
			f.mu.Unlock()
			return nil, err
		}
		ch := f.wait()
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			f.mu.Lock()
			fl.leave()
			f.mu.Unlock()
			return nil, ctx.Err()
		}
		f.mu.Lock()
	}
}

// Close detaches a follower that stops reading before the end, such as one whose
// client went away. It is safe to call more than once, and after Next failed.
func (fl *Follower) Close() {
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	fl.leave()
}

// leave detaches the follower once. Called with f.mu held.
func (fl *Follower) leave() {
	if !fl.done {
		fl.done = true
		fl.f.detach()
	}
}
