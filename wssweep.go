package openairelay

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/caddyrelay/openairelay/internal/wsframe"
)

// The open sessions of a relay, and the sweeper that holds them to their
// bounds.

// sessionTable is a relay's open sessions, which the sweeper closes when
// they outlive their bounds, lose their key, or the config is unloaded.
type sessionTable struct {
	mu   sync.Mutex
	open map[*wsSession]struct{}
}

func (t *sessionTable) add(s *wsSession) {
	t.mu.Lock()
	if t.open == nil {
		t.open = make(map[*wsSession]struct{})
	}
	t.open[s] = struct{}{}
	t.mu.Unlock()
}

func (t *sessionTable) remove(s *wsSession) {
	t.mu.Lock()
	delete(t.open, s)
	t.mu.Unlock()
}

func (t *sessionTable) list() []*wsSession {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*wsSession, 0, len(t.open))
	for s := range t.open {
		out = append(out, s)
	}
	return out
}

// sweepInterval is how often open sessions are checked against their bounds.
const sweepInterval = time.Second

// sweepSessions closes, every sweepInterval, the sessions past their
// length or idle bound and those whose key was retired; when the config is
// unloaded, it closes all (1012, the service restarts).
func (rl *Relay) sweepSessions(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, s := range rl.sessions.list() {
				s.shutdown(wsframe.CloseServiceRestart, "openai_relay: the relay's configuration was unloaded", false)
			}
			return
		case now := <-t.C:
			for _, s := range rl.sessions.list() {
				s.sweep(now)
			}
		}
	}
}

func (s *wsSession) sweep(now time.Time) {
	if s.closing.Load() {
		return // closing already: its close frames went out once
	}
	switch {
	case now.Sub(s.opened) >= time.Duration(s.conf.MaxDuration):
		s.shutdown(wsframe.CloseNormal, "openai_relay: the session reached its maximum duration", false)
	case now.UnixNano()-s.lastSeen.Load() >= int64(s.conf.IdleTimeout):
		s.shutdown(wsframe.CloseNormal, "openai_relay: the session was idle too long", false)
	case s.upstream() != nil && s.key.state.retired():
		_ = s.toClient(wsframe.OpText, wsErrorEvent(s.realtime, errSessionKeyRetired(), ""))
		s.shutdown(wsframe.CloseTryAgainLater, "openai_relay: the session's upstream key was retired", false)
	}
}

// errSessionKeyRetired tells a session's client that its key was taken out
// of rotation.
func errSessionKeyRetired() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_key_retired",
		Message: "The upstream key of this session was taken out of rotation: open a new session."}
}

// sessionRoom reports whether key may take another session
// (max_sessions_per_key).
func (rl *Relay) sessionRoom(k *poolKey) bool {
	max := rl.webSocket().MaxSessionsPerKey
	return max == 0 || k.state.sessions.Load() < int64(max)
}
