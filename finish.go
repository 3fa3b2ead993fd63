package openairelay

import (
	"net/http"
	"strconv"
	"time"
)

// finish settles a request whose answer the client got, in one place: the
// hold on the tokens the answer reported (the estimate when it reported
// none), the objects the answer tells of (objects.go), the client's spend
// (spend.go), the token counters and placeholders. An answer whose upstream
// body was cut is then ended as an abort, as reverse_proxy does, so that it
// cannot pass for a whole one.
func (pr *proxyRequest) finish(h *hold, a answer) {
	defer putBuffer(a.kept)
	pr.settle(h, a)
	if a.cut {
		panic(http.ErrAbortHandler)
	}
}

func (pr *proxyRequest) settle(h *hold, a answer) {
	if !a.success || a.free {
		h.settle(0)
		return
	}
	var u usage
	var ok bool
	switch {
	case a.tap != nil:
		if u, ok = a.tap.usage(); !ok {
			// An aborted stream settles on what was seen: the prompt, and
			// about a token an event (OpenAI streams a token a chunk).
			u, ok = usage{prompt: pr.promptEst, completion: int64(a.tap.events)}, true
			u.total = u.prompt + u.completion
		}
	case a.body != nil:
		u, ok = usageOf(a.body)
	}
	key := h.key
	pr.rememberResponse(key, a.body, a.tap)
	if !ok {
		// No usage reported (an endpoint without it, an answer too large to
		// keep): the estimate stands.
		h.settle(pr.estimate)
		return
	}
	// The upstream admitted the request at its prompt plus its own max
	// tokens and does not give back what went unused: neither does the
	// relay, or it would believe in room the upstream does not have.
	h.settle(max(u.total, pr.promptEst+pr.api.maxOut))
	pr.account(key, u)
	pr.repl.Set(phPromptTokens, strconv.FormatInt(u.prompt, 10))
	pr.repl.Set(phCompletionTokens, strconv.FormatInt(u.completion, 10))
}

// account records what an answer used, by its usage: the client's spend,
// the key's and the client's token counters, the metrics.
func (pr *proxyRequest) account(key *poolKey, u usage) {
	pr.spend(u)
	key.state.tokensIn.Add(u.prompt)
	key.state.tokensOut.Add(u.completion)
	key.state.minute.add(time.Now(), 0, u.prompt+u.completion)
	traffic.tokens.Add(u.prompt + u.completion)
	pr.client.state.tokensIn.Add(u.prompt)
	pr.client.state.tokensOut.Add(u.completion)
	tokensTotal.WithLabelValues(key.upstream.Name, key.id, "prompt").Add(float64(u.prompt))
	tokensTotal.WithLabelValues(key.upstream.Name, key.id, "completion").Add(float64(u.completion))
	if u.cached > 0 {
		tokensTotal.WithLabelValues(key.upstream.Name, key.id, "cached").Add(float64(u.cached))
	}
	if u.audioIn > 0 {
		tokensTotal.WithLabelValues(key.upstream.Name, key.id, "audio_prompt").Add(float64(u.audioIn))
	}
	if u.audioOut > 0 {
		tokensTotal.WithLabelValues(key.upstream.Name, key.id, "audio_completion").Add(float64(u.audioOut))
	}
}
