package openairelay

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// probeInterval is how often the prober looks for retired keys whose next
// probe is due.
const probeInterval = time.Second

// probeTimeout bounds one probe.
const probeTimeout = 15 * time.Second

// probeRetired restores retired keys that work again. Every retired key is
// probed with a cheap request (GET /models with that key) after a backoff
// that doubles with each failed probe, up to an hour, so a dead key is never
// hammered and nothing stays retired by accident. It runs until the config
// is unloaded.
func (rl *Relay) probeRetired(ctx context.Context) {
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			for _, k := range rl.keys {
				if rl.state.probeDue(k.state, now) {
					rl.probe(ctx, k)
				}
			}
		}
	}
}

// probe tries a retired key and records the result.
func (rl *Relay) probe(ctx context.Context, k *poolKey) {
	ok := rl.probeOnce(ctx, k) == probeAlive
	restored := rl.state.probed(k.state, ok, time.Now())
	if !ok {
		rl.logger.Debug("retired key still fails its probe",
			zap.String("upstream", k.upstream.Name), zap.String("key", k.id))
		return
	}
	rl.logger.Info("retired key passed its probe; restored",
		zap.String("upstream", k.upstream.Name), zap.String("key", k.id))
	if restored {
		rl.events.keyRestored(keyInfo{id: k.id, upstream: k.upstream.Name}, "probe")
	}
	capacityReleased()
}

// retireKey takes a key out of rotation for reason (built by deadReason).
func (rl *Relay) retireKey(k *poolKey, reason string, now time.Time) {
	newly := rl.state.retire(k.state, reason, now, time.Duration(rl.ProbeBackoff))
	keyRetirements.WithLabelValues(k.upstream.Name, k.id).Inc()
	rl.logger.Warn("upstream key retired",
		zap.String("upstream", k.upstream.Name), zap.String("key", k.id), zap.String("reason", reason))
	if newly {
		rl.events.keyRetired(keyInfo{id: k.id, upstream: k.upstream.Name}, reason)
	}
}

// confirmKey probes a key that got a 401 or 403 naming neither the key nor
// the request, in the background, and retires it only if the probe fails
// the same way: a request that needs nothing but a valid key. One
// confirmation runs per key at a time; the key stays in rotation meanwhile.
func (rl *Relay) confirmKey(k *poolKey, status int, body []byte) {
	if !k.state.confirming.CompareAndSwap(false, true) {
		return
	}
	reason := deadReason(status, body)
	go func() {
		defer k.state.confirming.Store(false)
		if rl.probeOnce(rl.ctx, k) == probeDead {
			rl.retireKey(k, reason, time.Now())
		}
	}()
}

// probeResult is what one probe says of a key.
type probeResult uint8

const (
	probeInconclusive probeResult = iota // no answer, or a server error
	probeAlive                           // the key authenticates and has quota
	probeDead                            // the key itself was refused
)

// probeOnce asks GET /models with the key and reads the answer as a request
// would be (see classify): a 429 rate limit means the key authenticates and
// has quota, and a 401 or 403 about the request (a restricted key that may
// not list models) means it authenticates too.
func (rl *Relay) probeOnce(ctx context.Context, k *poolKey) probeResult {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	u := k.upstream
	target := *u.base
	target.Path = u.base.Path + "/models"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), http.NoBody)
	if err != nil {
		return probeInconclusive
	}
	req.Host = u.base.Host
	setKeyAuth(req.Header, k)
	// As a request would go: the upstream's own headers (an Azure
	// deployment's, a gateway's) and the query of its URL (api-version).
	if u.HeaderUp != nil {
		u.HeaderUp.ApplyTo(req.Header, caddy.NewReplacer())
	}
	resp, err := u.transport.RoundTrip(req)
	if err != nil {
		return probeInconclusive
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	v := classify(resp.StatusCode, body)
	switch {
	case v.outcome == outcomeDeadKey || v.suspect:
		return probeDead
	case v.outcome == outcomeSuccess || v.outcome == outcomeRateLimited,
		resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return probeAlive
	}
	return probeInconclusive
}
