package openairelay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/wsframe"
)

// wsSession is one WebSocket session between a client and an upstream key.
// Two loops carry it: fromClient (its own goroutine) reads the client's
// messages, checks and reserves what they ask for and sends them on;
// fromUpstream (the handler's goroutine) sends the upstream's on to the
// client as each arrives and settles each response from the usage of its
// last event. A message goes on whole, as one frame, with nothing added.
type wsSession struct {
	rl       *Relay
	pr       *proxyRequest // the session's client, route and placeholders
	conf     *WebSocketConfig
	realtime bool
	opened   time.Time

	client net.Conn
	cr     *wsframe.Reader
	cwMu   sync.Mutex // the client's writer: both loops and the sweeper write
	cw     *bufio.Writer
	// cwDone is set under cwMu when the session ends: the connection is
	// the HTTP server's again (its access log reads what was written), and
	// a late write (the sweeper's) is dropped.
	cwDone bool

	// up, ur and uw are the upstream's connection; set once, by attach
	// (for a Responses socket, when its first response.create is sent).
	key         *poolKey
	sessionHold *hold // a Realtime session's request and concurrency slot on key
	upMu        sync.Mutex
	up          io.ReadWriteCloser
	upReady     chan struct{} // closed by attach, or by beginClose without one
	readyClosed bool
	ur          *wsframe.Reader
	uwMu        sync.Mutex
	uw          *bufio.Writer

	mu      sync.Mutex
	pending []*wsResponse          // asked for, not created yet (in order)
	active  map[string]*wsResponse // created, by response id
	own     map[string]bool        // a Responses socket's responses, which later ones may continue
	// lastInput is the input tokens of the session's last response: a
	// Realtime response's prompt is the conversation so far, which the
	// relay does not see whole.
	lastInput int64

	lastSeen        atomic.Int64 // Unix ns of the last message either way
	closing         atomic.Bool
	closeOnce       sync.Once
	done            chan struct{} // closed when the session is to end
	clientCloseSent atomic.Bool
	upCloseSent     atomic.Bool

	flowUp, flowDown               wsFlow // client → upstream, upstream → client
	tokensIn, tokensOut, responses atomic.Int64
}

// wsResponse is one response of a session: what it holds on the key and
// the client's budget until its last event settles it.
type wsResponse struct {
	h          *hold
	eventID    string // the response.create that asked for it: its event_id (Realtime) or stream_id (Responses)
	estimate   int64
	allowance  int64 // the output tokens admitted besides the input: settled at least input + allowance
	budget     float64
	budgetHold spendHold
	// pr is the request a Responses socket's response.create stands for:
	// its model, objects and spend.
	pr *proxyRequest
	// request is set for a Responses socket's response that is a request
	// of its own at the API, counted when it ends (the first one's request
	// is the dial's attempt, counted there).
	request bool
}

var wsEventSeq atomic.Int64

func (rl *Relay) newSession(pr *proxyRequest, conn net.Conn, brw *bufio.ReadWriter) *wsSession {
	conf := rl.webSocket()
	s := &wsSession{
		rl: rl, pr: pr, conf: conf, realtime: pr.upgrade.realtime, opened: time.Now(),
		client: conn, cr: wsframe.NewReader(brw.Reader, true, conf.MaxMessageSize), cw: brw.Writer,
		upReady: make(chan struct{}), done: make(chan struct{}),
		active: make(map[string]*wsResponse),
		flowUp: newWSFlow("up"), flowDown: newWSFlow("down"),
	}
	s.touch()
	return s
}

// keep moves the session's hold out of the attempt that took it: the
// attempt's deferred cancel then does nothing, and the session settles it
// when it ends. The learning slot goes back now: the upstream has answered.
func (s *wsSession) keep(h *hold) {
	s.sessionHold = h.keep()
	s.key = h.key
}

// attach makes rwc the session's upstream connection; false (and rwc
// closed) when the session is closing already.
func (s *wsSession) attach(rwc io.ReadWriteCloser) bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.readyClosed {
		rwc.Close()
		return false
	}
	s.ur = wsframe.NewReader(bufio.NewReaderSize(rwc, 4096), false, s.conf.MaxMessageSize)
	s.uw = bufio.NewWriterSize(rwc, 4096)
	s.up = rwc
	s.key.state.sessions.Add(1)
	s.readyClosed = true
	close(s.upReady)
	return true
}

// upstream is the upstream's connection, nil before attach.
func (s *wsSession) upstream() io.ReadWriteCloser {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	return s.up
}

func (s *wsSession) touch() { s.lastSeen.Store(time.Now().UnixNano()) }

func (s *wsSession) endpoint() string {
	if s.realtime {
		return "realtime"
	}
	return "responses"
}

// run carries the session until both sides are done with it.
func (s *wsSession) run() {
	s.rl.sessions.add(s)
	wsSessionsOpen.WithLabelValues(s.endpoint()).Inc()
	wsSessionsTotal.WithLabelValues(s.endpoint()).Inc()
	fromClientDone := make(chan struct{})
	go func() {
		defer close(fromClientDone)
		s.fromClient()
	}()
	select {
	case <-s.upReady:
		if s.upstream() != nil {
			s.fromUpstream()
		}
	case <-s.done:
	}
	<-fromClientDone
	s.end()
}

// end settles what the session still holds, after both loops stopped.
func (s *wsSession) end() {
	s.rl.sessions.remove(s)
	wsSessionsOpen.WithLabelValues(s.endpoint()).Dec()
	s.mu.Lock()
	pending, active := s.pending, s.active
	s.pending, s.active = nil, nil
	s.mu.Unlock()
	for _, r := range pending {
		// Asked for and never created: the upstream counted nothing.
		s.release(r)
		r.h.cancel()
	}
	for _, r := range active {
		// Created, and cut off by the session's end: it may have used
		// all it reserved.
		s.release(r)
		r.h.settle(r.estimate)
	}
	s.sessionHold.settle(0)
	if up := s.upstream(); up != nil {
		s.key.state.sessions.Add(-1)
		up.Close()
	}
	s.cwMu.Lock()
	s.cwDone = true
	s.cwMu.Unlock()
	s.client.Close()
	repl := s.pr.repl
	repl.Set(phPromptTokens, strconv.FormatInt(s.tokensIn.Load(), 10))
	repl.Set(phCompletionTokens, strconv.FormatInt(s.tokensOut.Load(), 10))
	repl.Set(phWSResponses, strconv.FormatInt(s.responses.Load(), 10))
	repl.Set(phWSMessagesUp, strconv.FormatInt(s.flowUp.messages.Load(), 10))
	repl.Set(phWSMessagesDown, strconv.FormatInt(s.flowDown.messages.Load(), 10))
	repl.Set(phWSBytesUp, strconv.FormatInt(s.flowUp.bytes.Load(), 10))
	repl.Set(phWSBytesDown, strconv.FormatInt(s.flowDown.bytes.Load(), 10))
	repl.Set(phWSDurationMS, strconv.FormatInt(time.Since(s.opened).Milliseconds(), 10))
}

// toClient sends the client one message or control frame.
func (s *wsSession) toClient(op wsframe.Opcode, p []byte) error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	if s.cwDone {
		return net.ErrClosed
	}
	if err := wsframe.WriteFrame(s.cw, op, p, nil); err != nil {
		return err
	}
	return s.cw.Flush()
}

// toUpstream sends the upstream one message or control frame, masked.
func (s *wsSession) toUpstream(op wsframe.Opcode, p []byte) error {
	s.uwMu.Lock()
	defer s.uwMu.Unlock()
	if err := wsframe.WriteFrame(s.uw, op, p, maskKey); err != nil {
		return err
	}
	return s.uw.Flush()
}

func maskKey(key []byte) { _, _ = rand.Read(key) }

// closeGrace is how long the relay waits for the other side's close frame
// (and the last messages before it) once a session is closing.
const closeGrace = 3 * time.Second

// beginClose marks the session as closing, once: the loops stop at their
// next message, and both connections are cut after closeGrace whatever the
// peers do.
func (s *wsSession) beginClose() {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		close(s.done)
		s.upMu.Lock()
		if !s.readyClosed {
			s.readyClosed = true
			close(s.upReady) // a Responses socket that never dialled
		}
		s.upMu.Unlock()
		time.AfterFunc(closeGrace, func() {
			s.client.Close()
			if up := s.upstream(); up != nil {
				up.Close()
			}
		})
	})
}

// closeClient and closeUpstream send a side its close frame, once each.
func (s *wsSession) closeClient(code int, reason string) {
	if s.clientCloseSent.CompareAndSwap(false, true) {
		_ = s.client.SetWriteDeadline(time.Now().Add(closeGrace))
		_ = s.toClient(wsframe.OpClose, wsframe.CloseFrame(code, reason))
	}
}

func (s *wsSession) closeUpstream(code int, reason string) {
	if s.upstream() != nil && s.upCloseSent.CompareAndSwap(false, true) {
		_ = s.toUpstream(wsframe.OpClose, wsframe.CloseFrame(code, reason))
	}
}

// shutdown ends the session from the relay's side: both peers get a close
// frame with code and reason, and their connections are cut after
// closeGrace. cutNow cuts the upstream at once (the client went away:
// nothing more is for it).
func (s *wsSession) shutdown(code int, reason string, cutNow bool) {
	s.beginClose()
	s.closeClient(code, reason)
	s.closeUpstream(code, reason)
	if up := s.upstream(); cutNow && up != nil {
		up.Close()
	}
}

// fail sends the client the API's error event for aerr and closes the
// session cleanly with code.
func (s *wsSession) fail(aerr *apiError, eventID string, code int) {
	_ = s.toClient(wsframe.OpText, wsErrorEvent(s.realtime, aerr, eventID))
	s.shutdown(code, truncateReason(aerr.Message), false)
}

func truncateReason(msg string) string { return "openai_relay: " + msg }

func (s *wsSession) fromClient() {
	for {
		msg, err := s.cr.Next()
		if err != nil {
			s.clientEnded(err)
			return
		}
		s.touch()
		switch msg.Op {
		case wsframe.OpPing:
			if s.upstream() == nil {
				// Nothing to pass it to yet: the relay answers.
				_ = s.toClient(wsframe.OpPong, msg.Data)
				continue
			}
			_ = s.toUpstream(wsframe.OpPing, msg.Data)
			continue
		case wsframe.OpPong:
			if s.upstream() != nil {
				_ = s.toUpstream(wsframe.OpPong, msg.Data)
			}
			continue
		case wsframe.OpClose:
			// The client ends the session (or answers the relay's close):
			// the upstream gets its close, and the upstream's answer ends
			// fromUpstream; without an upstream the relay answers.
			code, reason, _ := wsframe.ParseClose(msg.Data)
			s.beginClose()
			if s.upstream() != nil {
				s.closeUpstream(closeCode(code), reason)
			} else {
				s.closeClient(closeCode(code), reason)
			}
			return
		}
		if s.upCloseSent.Load() {
			continue // the upstream was told the session ends
		}
		s.flowUp.add(len(msg.Data))
		if !s.clientMessage(msg) {
			return
		}
	}
}

// clientEnded handles the end of the client's stream: a protocol error is
// answered with its close code, a connection gone closes the upstream at
// once.
func (s *wsSession) clientEnded(err error) {
	if s.closing.Load() {
		return
	}
	var pe *wsframe.ProtocolError
	if errors.As(err, &pe) {
		s.shutdown(pe.Code, pe.Reason, true)
		return
	}
	s.shutdown(wsframe.CloseGoingAway, "openai_relay: the client went away", true)
}

// closeCode is the code to pass on for a close frame that had code: one
// without a code is answered as a normal closure.
func closeCode(code int) int {
	if code == wsframe.CloseNoStatus {
		return wsframe.CloseNormal
	}
	return code
}

// clientMessage checks, reserves and sends on one data message of the
// client; false ends the loop.
func (s *wsSession) clientMessage(msg wsframe.Message) bool {
	if msg.Op != wsframe.OpText {
		// Both APIs take JSON text only; the upstream answers a binary
		// message with its error event, if it is there to.
		return s.forward(msg)
	}
	head, ok := readEventHead(msg.Data)
	if !s.realtime {
		return s.responsesMessage(msg, head, ok)
	}
	if !ok || (head.typ == "response.create" || head.typ == "session.update") && !json.Valid(msg.Data) {
		// The upstream answers it with its error event; nothing to account.
		return s.forward(msg)
	}
	switch head.typ {
	case "session.update":
		if m, named := sessionModel(msg.Data); named && m != s.pr.api.model && m != s.key.upstream.upstreamModel(s.pr.api.model) {
			// The session's model was checked and routed when it opened.
			return s.refuse(&apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "model_change_not_allowed",
				Param: "session.model", Message: "The relay does not change a session's model: open a new session with ?model=" + truncateForMessage(m) + "."}, head.eventID)
		}
	case "response.create":
		estimate, allowance := s.realtimeEstimate(msg.Data)
		r, aerr, code := s.planResponse(s.pr, head.eventID, estimate, allowance, nil)
		if aerr != nil {
			s.fail(aerr, head.eventID, code)
			return false
		}
		s.mu.Lock()
		s.pending = append(s.pending, r)
		s.mu.Unlock()
	}
	return s.forward(msg)
}

// refuse answers a client event with the API's error event in place of
// the upstream; the session stays open.
func (s *wsSession) refuse(aerr *apiError, eventID string) bool {
	return s.toClient(wsframe.OpText, wsErrorEvent(s.realtime, aerr, eventID)) == nil
}

// forward sends a client's message to the upstream as it came.
func (s *wsSession) forward(msg wsframe.Message) bool {
	if s.upstream() == nil {
		return s.refuse(errBadRequest("Invalid value: the first event of this socket must be a response.create.", "type"), "")
	}
	if err := s.toUpstream(msg.Op, msg.Data); err != nil {
		s.upstreamEnded(err)
		return false
	}
	return true
}

func (s *wsSession) fromUpstream() {
	secret := []byte(s.key.secret)
	for {
		msg, err := s.ur.Next()
		if err != nil {
			s.upstreamEnded(err)
			return
		}
		s.touch()
		switch msg.Op {
		case wsframe.OpPing, wsframe.OpPong:
			_ = s.toClient(msg.Op, msg.Data)
			continue
		case wsframe.OpClose:
			// The upstream ends the session (or answers a close): the
			// client gets it, and its answer ends fromClient.
			code, reason, _ := wsframe.ParseClose(msg.Data)
			s.beginClose()
			s.closeClient(closeCode(code), string(scrub([]byte(reason), s.key.secret)))
			return
		}
		if s.clientCloseSent.Load() {
			continue // the client was told the session ends
		}
		data := msg.Data
		if msg.Op == wsframe.OpText {
			if head, ok := readEventHead(data); ok {
				s.observe(head.typ, data)
				if head.typ == "error" && bytes.Contains(data, secret) {
					data = scrub(data, s.key.secret)
				}
			}
		}
		s.flowDown.add(len(data))
		if err := s.toClient(msg.Op, data); err != nil {
			s.shutdown(wsframe.CloseGoingAway, "openai_relay: the client went away", true)
			return
		}
	}
}

// upstreamEnded handles the end of the upstream's stream.
func (s *wsSession) upstreamEnded(err error) {
	if s.closing.Load() {
		return
	}
	var pe *wsframe.ProtocolError
	if errors.As(err, &pe) {
		s.rl.logger.Warn("upstream broke the WebSocket protocol", zap.String("upstream", s.key.upstream.Name),
			zap.String("key", s.key.id), zap.String("error", pe.Reason))
		s.shutdown(wsframe.CloseInternalError, "openai_relay: the upstream broke the WebSocket protocol", true)
		return
	}
	s.shutdown(wsframe.CloseInternalError, "openai_relay: the upstream connection was lost", true)
}
