package openairelay

import (
	"context"
	"io"
	"net/http"
	"time"

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
				if k.state.probeDue(now) {
					rl.probe(ctx, k)
				}
			}
		}
	}
}

// probe tries a retired key and records the result.
func (rl *Relay) probe(ctx context.Context, k *poolKey) {
	ok := rl.probeOnce(ctx, k)
	k.state.probed(ok, time.Now())
	if !ok {
		rl.logger.Debug("retired key still fails its probe",
			zap.String("upstream", k.upstream.Name), zap.String("key", k.id))
		return
	}
	rl.logger.Info("retired key passed its probe; restored",
		zap.String("upstream", k.upstream.Name), zap.String("key", k.id))
	rl.capacityReleased()
}

func (rl *Relay) probeOnce(ctx context.Context, k *poolKey) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	u := k.upstream
	target := *u.base
	target.Path = u.base.Path + "/models"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), http.NoBody)
	if err != nil {
		return false
	}
	req.Host = u.base.Host
	setKeyAuth(req.Header, k)
	resp, err := u.transport.RoundTrip(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode == http.StatusTooManyRequests {
		// A rate limit means the key authenticates and has quota.
		return !isQuotaError(body)
	}
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}
