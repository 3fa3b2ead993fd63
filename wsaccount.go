package openairelay

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/wsframe"
)

// A session's responses, accounted as requests are: each is reserved on the
// session's key and the client's limits (and budget) before its
// response.create goes on, and settled from the usage of its last event.

// realtimeEstimate is what a Realtime response.create is expected to cost:
// the session's last input (the conversation grows) and the response's
// output allowance, which is also returned.
func (s *wsSession) realtimeEstimate(msg []byte) (estimate, allowance int64) {
	allowance = realtimeAllowance(msg)
	if allowance == 0 {
		allowance = s.rl.DefaultMaxTokens
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastInput + allowance, allowance
}

// planResponse reserves what one response will use on the session's key
// and the client's limits, waiting for room as a request waits (for at
// most max_wait), unless held already has it, and its estimated spend on
// the client's budget. A refusal is the error to send and the close code
// to end with.
func (s *wsSession) planResponse(req *proxyRequest, eventID string, estimate, allowance int64, held *hold) (*wsResponse, *apiError, int) {
	r := &wsResponse{eventID: eventID, estimate: estimate, allowance: allowance, pr: req}
	if b := s.pr.client.Budget; b != nil {
		usd, priced := s.rl.price(req.api.model, usage{prompt: estimate})
		if !priced {
			return nil, errUnpricedModel(req.api.model), wsframe.ClosePolicyViolation
		}
		if s.rl.state.unavailable() {
			return nil, errStateUnavailable(), wsframe.CloseTryAgainLater
		}
		hold, ok := s.rl.state.reserveSpend(s.pr.client.state, time.Now(), b.Period, b.USD, usd)
		if !ok {
			return nil, req.overBudget(time.Now()), wsframe.ClosePolicyViolation
		}
		r.budget, r.budgetHold = usd, hold
	}
	if held != nil {
		// The dial of a Responses socket took it.
		r.h = held
		return r, nil, 0
	}
	h, aerr := s.reserveOnKey(estimate)
	if aerr != nil {
		s.release(r)
		return nil, aerr, wsframe.CloseTryAgainLater
	}
	r.h = h
	h.sent()
	if !s.realtime {
		r.request = true
		s.key.state.requests.Add(1)
	}
	return r, nil, 0
}

// reserveOnKey takes what a response uses on the key and the client's
// limiter, waiting in the relay's queue for room: in a Realtime session its
// tokens alone (the session is the request, and holds the slot); in a
// Responses socket one request and its tokens, as over HTTP.
func (s *wsSession) reserveOnKey(tokens int64) (*hold, *apiError) {
	key, cl := s.key, s.pr.client.limiter
	reserveFn, check := reserveTokens, (*limit.Limiter).CheckTokens
	if !s.realtime {
		reserveFn, check = reserve, (*limit.Limiter).Check
	}
	var got *hold
	try := func(now time.Time) (time.Time, bool) {
		if key.state.retired() {
			return time.Time{}, true
		}
		h, ok := reserveFn(s.rl.state, now, key, cl, tokens)
		if ok {
			got = h
			return time.Time{}, true
		}
		at, _ := check(key.limiter, now, tokens)
		if cl != nil {
			if a, ok := check(cl, now, tokens); !ok && a.After(at) {
				at = a
			}
		}
		if at.IsZero() {
			at = now.Add(100 * time.Millisecond)
		}
		return at, false
	}
	if _, ok := try(time.Now()); ok && got != nil {
		return got, nil
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-s.done:
			stop()
		case <-ctx.Done():
		}
	}()
	waited, err := s.rl.queue.Wait(ctx, s.pr.priority, time.Now().Add(time.Duration(s.rl.MaxWait)), try)
	if waited > 0 {
		queueWait.Observe(waited.Seconds())
	}
	switch {
	case got != nil:
		return got, nil
	case key.state.retired():
		return nil, errSessionKeyRetired()
	case errors.Is(err, limit.ErrQueueFull):
		return nil, errNoCapacity(time.Second, "the relay's queue is full.")
	}
	return nil, errNoCapacity(time.Second, "this session's upstream key has no capacity for the response within the wait limit.")
}

// release gives back a response's budget reservation.
func (s *wsSession) release(r *wsResponse) {
	if r.budget > 0 || r.budgetHold != "" {
		s.rl.state.releaseSpend(s.pr.client.state, r.budgetHold, r.budget)
		r.budget, r.budgetHold = 0, ""
	}
}

// observe accounts by the upstream's events: a response created takes the
// reservation its response.create made (or, for one the server made
// itself, such as on voice activity, one now); its last event settles it
// with its usage; an error event gives back what the refused event
// reserved; rate_limits.updated teaches the key's limits.
func (s *wsSession) observe(typ string, msg []byte) {
	switch typ {
	case "response.created":
		s.created(stringMember(responseOf(msg), "id"), stringMember(msg, "stream_id"))
	case "response.done", "response.completed", "response.incomplete", "response.failed":
		s.completed(responseOf(msg), stringMember(msg, "stream_id"))
	case "error":
		s.refused(msg)
	case "rate_limits.updated":
		s.learnLimits(msg)
	}
}

func (s *wsSession) created(id, lane string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.takePending(lane)
	if r == nil {
		// A response the server made itself (turn detection): it is
		// charged from now; with no room it is charged in debt.
		est := s.lastInput + s.rl.DefaultMaxTokens
		h, ok := reserveTokens(s.rl.state, time.Now(), s.key, s.pr.client.limiter, est)
		if !ok {
			est = 0
			h, _ = reserveTokens(s.rl.state, time.Now(), s.key, s.pr.client.limiter, 0)
		}
		r = &wsResponse{h: h, estimate: est, allowance: s.rl.DefaultMaxTokens, pr: s.pr}
	}
	if id == "" {
		id = "\x00" + strconv.FormatInt(wsEventSeq.Add(1), 36)
	}
	s.active[id] = r
}

// takePending removes and returns the pending response a server event is
// for: the one whose response.create named lane (a Responses socket's
// stream_id), else the oldest (responses start in the order asked for).
// The caller holds s.mu.
func (s *wsSession) takePending(lane string) *wsResponse {
	i := 0
	if lane != "" && !s.realtime {
		i = slices.IndexFunc(s.pending, func(p *wsResponse) bool { return p.eventID == lane })
	}
	if i < 0 || len(s.pending) == 0 {
		return nil
	}
	r := s.pending[i]
	s.pending = slices.Delete(s.pending, i, i+1)
	return r
}

// completed settles a response from the usage of its last event.
func (s *wsSession) completed(resp []byte, lane string) {
	id := stringMember(resp, "id")
	s.mu.Lock()
	r := s.active[id]
	delete(s.active, id)
	if r == nil {
		// Its response.created never came by: the one of its lane, or
		// the oldest asked for.
		r = s.takePending(lane)
	}
	u, ok := usageOf(resp)
	if ok {
		s.lastInput = u.prompt
	}
	if !s.realtime && id != "" && s.own != nil {
		s.own[id] = true
	} else if !s.realtime && id != "" {
		s.own = map[string]bool{id: true}
	}
	s.mu.Unlock()
	if r == nil {
		return
	}
	s.responses.Add(1)
	s.release(r)
	if !ok {
		r.h.settle(r.estimate)
		return
	}
	// As over HTTP, the upstream is taken to keep what it admitted (the
	// input and the allowance) though the response used less: were it to
	// give the rest back, the relay only leaves that much unused. (The
	// Realtime reference says rate_limits.updated shows the reservation,
	// "adjusted accordingly once the Response is completed", without saying
	// whether downwards.)
	r.h.settle(max(u.total, u.prompt+r.allowance))
	req := r.pr
	if !s.realtime {
		req.rememberResponse(s.key, resp, nil)
	}
	if r.request {
		// A failed response was the upstream's doing, as a 5xx is.
		outcome := "success"
		if stringMember(resp, "status") == "failed" {
			outcome = "server_error"
		}
		req.count(s.key, outcome)
	}
	req.account(s.key, u)
	s.tokensIn.Add(u.prompt)
	s.tokensOut.Add(u.completion)
}

// refused gives back what the client event an error event refuses
// reserved: the Realtime API names it (error.event_id); in a Responses
// socket it is the response.create of the error's stream_id, or without
// one the oldest asked for. A refusal for the key's rate limit rests the
// key, as a 429 does.
func (s *wsSession) refused(msg []byte) {
	s.mu.Lock()
	var r *wsResponse
	if s.realtime {
		eventID := errorEventOf(msg)
		for i, p := range s.pending {
			if eventID != "" && p.eventID == eventID {
				r = p
				s.pending = slices.Delete(s.pending, i, i+1)
				break
			}
		}
	} else {
		r = s.takePending(stringMember(msg, "stream_id"))
	}
	s.mu.Unlock()
	if r != nil {
		s.release(r)
		r.h.cancel()
	}
	e, _ := member(msg, "error")
	limited := stringMember(e, "code") == "rate_limit_exceeded"
	if r != nil && r.request {
		// Refused by the upstream: a 4xx (or 429) of an HTTP request.
		outcome := "client_error"
		if limited {
			outcome = "rate_limited"
		}
		r.pr.count(s.key, outcome)
	}
	if !limited {
		return
	}
	now := time.Now()
	until := now.Add(time.Duration(s.rl.Cooldown))
	if r != nil {
		s.rl.state.exhausted(s.key.limiter, until, r.estimate)
	} else {
		s.rl.state.exhausted(s.key.limiter, until, 0)
	}
	s.rl.logger.Info("upstream key rate limited in a WebSocket session; cooling down",
		zap.String("upstream", s.key.upstream.Name), zap.String("key", s.key.id), zap.Time("until", until))
}

// learnLimits reads a Realtime rate_limits.updated event ({name:
// "requests"|"tokens", limit, remaining, reset_seconds}) as the
// x-ratelimit-* headers of an answer, and teaches them to the key.
func (s *wsSession) learnLimits(msg []byte) {
	raw, ok := member(msg, "rate_limits")
	if !ok || len(raw) == 0 || raw[0] != '[' {
		return
	}
	h := make(http.Header)
	eachArrayObject(raw, func(obj []byte) {
		dim := stringMember(obj, "name")
		if dim != "requests" && dim != "tokens" {
			return
		}
		l, okL := member(obj, "limit")
		rem, okR := member(obj, "remaining")
		reset, okS := member(obj, "reset_seconds")
		if !okL || !okR {
			return
		}
		h.Set("X-Ratelimit-Limit-"+dim, string(l))
		h.Set("X-Ratelimit-Remaining-"+dim, string(rem))
		if okS {
			h.Set("X-Ratelimit-Reset-"+dim, string(reset)+"s")
		}
	})
	if len(h) > 0 {
		now := time.Now()
		s.rl.state.learn(s.key.limiter, now, now, h)
	}
}
