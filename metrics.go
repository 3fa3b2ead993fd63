package openairelay

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The collectors are created once per process and registered on the
// registry of every config load: Caddy makes a new registry per load, and
// collectors created per load would leave /metrics serving a registry
// nothing updates. Values thus survive reloads.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "requests_total",
		Help:      "Upstream attempts by upstream, key id, model and outcome.",
	}, []string{"upstream", "key", "model", "outcome"})

	upstreamLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "upstream_latency_seconds",
		Help:      "Time from sending a request upstream to its response header.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"upstream"})

	retriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "retries_total",
		Help:      "Retries by the reason the previous attempt failed.",
	}, []string{"reason"})
)

func registerMetrics(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{requestsTotal, upstreamLatency, retriesTotal} {
		if err := reg.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				panic(err) // a programming error: a collector's description is invalid
			}
		}
	}
}

// maxModelLabels bounds the model label's values: the model comes from the
// client, and an unbounded label would let clients grow the metrics without
// limit. Models seen after the bound are counted as "other".
const maxModelLabels = 200

var modelLabels struct {
	sync.RWMutex
	seen map[string]struct{}
}

func modelLabel(model string) string {
	if model == "" {
		return "none"
	}
	modelLabels.RLock()
	_, ok := modelLabels.seen[model]
	modelLabels.RUnlock()
	if ok {
		return model
	}
	modelLabels.Lock()
	defer modelLabels.Unlock()
	if modelLabels.seen == nil {
		modelLabels.seen = make(map[string]struct{})
	}
	if _, ok := modelLabels.seen[model]; ok {
		return model
	}
	if len(modelLabels.seen) >= maxModelLabels || len(model) > 100 {
		return "other"
	}
	modelLabels.seen[model] = struct{}{}
	return model
}
