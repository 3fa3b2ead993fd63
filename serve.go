package openairelay

import (
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Placeholder names set on every request.
const (
	phClient   = "http.openai_relay.client"
	phUpstream = "http.openai_relay.upstream"
	phKey      = "http.openai_relay.key"
	phModel    = "http.openai_relay.model"
	phRetries  = "http.openai_relay.retries"
	phQueueMS  = "http.openai_relay.queue_ms"
	phCache    = "http.openai_relay.cache"

	phPromptTokens     = "http.openai_relay.prompt_tokens"
	phCompletionTokens = "http.openai_relay.completion_tokens"

	// Set when a WebSocket session ends (wssession.go).
	phWSResponses    = "http.openai_relay.ws_responses"
	phWSMessagesUp   = "http.openai_relay.ws_messages_up"
	phWSMessagesDown = "http.openai_relay.ws_messages_down"
	phWSBytesUp      = "http.openai_relay.ws_bytes_up"
	phWSBytesDown    = "http.openai_relay.ws_bytes_down"
	phWSDurationMS   = "http.openai_relay.ws_duration_ms"
)

// ServeHTTP relays one request. The relay is a terminal handler: it answers
// every request itself and never calls next. Each stage is a method in the
// file named for it, and each writes its own refusal:
//
//	authenticate (authenticate.go) → parse (request.go) → route (route.go)
//	→ fromCache (cache.go) → relay: admit, acquire (acquire.go) → attempt
//	(attempt.go) → respond (response.go) → finish (finish.go)
func (rl *Relay) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}
	client, ok := rl.authenticate(w, r, repl)
	if !ok {
		return nil
	}
	if isWebSocketUpgrade(r) {
		// A session, not a request: websocket.go owns it from here.
		rl.serveWebSocket(w, r, client, repl)
		return nil
	}
	ar, ok := rl.parse(w, r, client, repl)
	if !ok {
		return nil
	}
	defer rl.releaseBody(ar)
	pr, ok := rl.route(w, r, client, ar, repl)
	if !ok {
		return nil
	}
	if pr.fromCache(w) {
		return nil
	}
	defer pr.leaveFlight()
	pr.relay(w)
	return nil
}

// relay takes the request to an upstream and its answer to the client:
// admitted against the client's budget, each attempt acquires a key with
// room, sends, and either responds and finishes, or fails over to another
// key (up to Retries more); when every attempt failed, the last failure is
// reported.
func (pr *proxyRequest) relay(w http.ResponseWriter) { pr.relayWith(w, pr.deliver) }

// deliver gives the client the answer of the attempt that got one, and
// settles it.
func (pr *proxyRequest) deliver(w http.ResponseWriter, resp *http.Response, h *hold, success bool) {
	pr.finish(h, pr.respond(w, resp, h, success))
}

// relayWith is relay with what is done with the answer of the attempt that
// got one: a WebSocket session (websocket.go) runs there.
func (pr *proxyRequest) relayWith(w http.ResponseWriter, deliver func(http.ResponseWriter, *http.Response, *hold, bool)) {
	defer func() {
		pr.repl.Set(phQueueMS, strconv.FormatInt(pr.queued.Milliseconds(), 10))
	}()
	if aerr := pr.admit(); aerr != nil {
		aerr.write(w)
		return
	}
	defer pr.releaseBudget()
	ctx, stop := pr.callContext()
	defer stop()
	var last *failure
	for try := 0; try <= pr.rl.retries; try++ {
		if try > 0 && !pr.pause(last) {
			return // the client left
		}
		h, aerr := pr.acquire()
		if aerr != nil {
			if last != nil && aerr.Status == http.StatusServiceUnavailable {
				break // every key is retired now: report what happened
			}
			aerr.write(w)
			return
		}
		if h == nil {
			return // the client left while waiting
		}
		// Whatever happens (a panic included), capacity reserved and not
		// yet settled is given back.
		defer h.cancel()
		if try > 0 {
			pr.countRetry(last)
		}
		resp, success, f := pr.attempt(ctx, h)
		if f == nil {
			if resp != nil {
				deliver(w, resp, h, success)
			}
			return
		}
		last = f
		if f.final {
			break
		}
	}
	pr.fail(w, last)
}
