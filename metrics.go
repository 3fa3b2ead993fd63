package openairelay

import (
	"cmp"
	"errors"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddyrelay/openairelay/internal/limit"
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
		Help:      "Upstream attempts by upstream, key id and outcome.",
	}, []string{"upstream", "key", "outcome"})

	// The model is a label of its own metric, not of requests_total: with
	// both, the series would grow as keys × models.
	modelRequestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "model_requests_total",
		Help:      "Upstream attempts by model (a configured model name or pattern, else other) and outcome.",
	}, []string{"model", "outcome"})

	upstreamLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "upstream_latency_seconds",
		Help:      "Time from sending a request upstream to its response header.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"upstream"})

	timeToFirstToken = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "time_to_first_token_seconds",
		Help:      "Time from sending a streamed request upstream to its first event reaching the client.",
		Buckets:   []float64{.05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30},
	}, []string{"upstream"})

	retriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "retries_total",
		Help:      "Retries by the reason the previous attempt failed.",
	}, []string{"reason"})

	tokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "tokens_total",
		Help:      "Tokens the upstreams reported using, by upstream, key id and kind (prompt, completion, and cached: the part of prompt served from the upstream's prompt cache).",
	}, []string{"upstream", "key", "kind"})

	keyRetirements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "key_retirements_total",
		Help:      "Times a key was retired after a 401, 403 or insufficient_quota.",
	}, []string{"upstream", "key"})

	spendTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "spend_usd_total",
		Help:      "What clients spent by the configured prices, in USD.",
	}, []string{"client"})

	queueWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "queue_wait_seconds",
		Help:      "Time requests waited in the queue for a key with capacity.",
		Buckets:   []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})

	queueLength = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "queue_length",
		Help:      "Requests waiting for capacity, over every relay handler.",
	}, func() float64 { return float64(queues.length()) })

	cacheResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "cache_requests_total",
		Help:      "Requests by cache result: HIT, MISS, BYPASS or COALESCED.",
	}, []string{"result"})

	cacheBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "cache_bytes",
		Help:      "Bytes held by the response caches.",
	}, func() float64 { return float64(cacheStats().Bytes) })

	cacheEntries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "cache_entries",
		Help:      "Entries in the response caches.",
	}, func() float64 { return float64(cacheStats().Entries) })

	cacheEvictions = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "cache_evictions_total",
		Help:      "Entries evicted from the response caches to make room (expired ones not counted).",
	}, func() float64 { return float64(cacheStats().Evictions) })

	keyStateDesc = prometheus.NewDesc("caddy_openai_relay_key_state",
		"1 for the state each key is in: available, cooling or retired.",
		[]string{"upstream", "key", "state"}, nil)
	keyInFlightDesc = prometheus.NewDesc("caddy_openai_relay_key_in_flight",
		"Requests in flight on each key (or its limit group).",
		[]string{"upstream", "key"}, nil)
	keySessionsDesc = prometheus.NewDesc("caddy_openai_relay_key_websocket_sessions",
		"WebSocket sessions open on each key.",
		[]string{"upstream", "key"}, nil)
)

// keyCollector reports the state of every key in use at scrape time, from
// the shared key states.
type keyCollector struct{}

var _ prometheus.Collector = keyCollector{}

func (keyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keyStateDesc
	ch <- keyInFlightDesc
	ch <- keySessionsDesc
}

func (keyCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	seen := make(map[[2]string]bool)
	keyStates.Range(func(_, v any) bool {
		ks := v.(*keyState)
		info := ks.info()
		// The same id on the same upstream name (one key under two URLs)
		// would repeat a series, which the registry refuses.
		if seen[[2]string{info.upstream, info.id}] {
			return true
		}
		seen[[2]string{info.upstream, info.id}] = true
		state := "available"
		switch {
		case ks.retired():
			state = "retired"
		case info.limiter != nil && info.limiter.CoolingUntil().After(now):
			state = "cooling"
		}
		for _, s := range []string{"available", "cooling", "retired"} {
			v := 0.0
			if s == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(keyStateDesc, prometheus.GaugeValue, v, info.upstream, info.id, s)
		}
		var inFlight float64
		if info.limiter != nil {
			inFlight = float64(info.limiter.InFlight())
		}
		ch <- prometheus.MustNewConstMetric(keyInFlightDesc, prometheus.GaugeValue, inFlight, info.upstream, info.id)
		ch <- prometheus.MustNewConstMetric(keySessionsDesc, prometheus.GaugeValue, float64(ks.sessions.Load()), info.upstream, info.id)
		return true
	})
}

// queueSet is the queues of every provisioned relay handler, for the queue
// length metric and so that capacity released anywhere wakes them all (a
// handler of the previous config shares keys with the new one during a
// reload). A queue of an unloaded config stays in the set until its last
// waiter has left: requests queued under the old config still wait for
// capacity that the new one releases.
type queueSet struct {
	mu sync.Mutex
	qs map[*limit.Queue]bool // true once the queue's config is unloaded
}

func (s *queueSet) add(q *limit.Queue) {
	s.mu.Lock()
	s.qs[q] = false
	s.mu.Unlock()
}

// remove marks the queue of an unloaded config; it leaves the set once empty.
func (s *queueSet) remove(q *limit.Queue) {
	s.mu.Lock()
	if q.Len() == 0 {
		delete(s.qs, q)
	} else {
		s.qs[q] = true
	}
	s.mu.Unlock()
}

func (s *queueSet) length() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for q := range s.qs {
		n += q.Len()
	}
	return n
}

// stats adds up the stats of every queue.
func (s *queueSet) stats() limit.QueueStats {
	s.mu.Lock()
	qs := make([]*limit.Queue, 0, len(s.qs))
	for q := range s.qs {
		qs = append(qs, q)
	}
	s.mu.Unlock()
	total := limit.QueueStats{ByPriority: make(map[int]int)}
	for _, q := range qs {
		st := q.Stats()
		total.Len += st.Len
		for p, n := range st.ByPriority {
			total.ByPriority[p] += n
		}
		if !st.Oldest.IsZero() && (total.Oldest.IsZero() || st.Oldest.Before(total.Oldest)) {
			total.Oldest = st.Oldest
		}
	}
	return total
}

// notify wakes every queue that has waiters.
func (s *queueSet) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q, unloaded := range s.qs {
		switch {
		case q.Len() > 0:
			q.Notify()
		case unloaded:
			delete(s.qs, q)
		}
	}
}

// collectors are every collector of the relay, which registerMetrics
// registers (and the Grafana dashboard's test checks its queries against).
func collectors() []prometheus.Collector {
	return []prometheus.Collector{requestsTotal, modelRequestsTotal, upstreamLatency, timeToFirstToken, retriesTotal, tokensTotal,
		keyRetirements, spendTotal, queueWait, queueLength, keyCollector{}, cacheResults, cacheBytes, cacheEntries, cacheEvictions, stateModeGauge,
		wsSessionsOpen, wsSessionsTotal, wsMessagesTotal, wsBytesTotal}
}

func registerMetrics(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	for _, c := range collectors() {
		if err := reg.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				panic(err) // a programming error: a collector's description is invalid
			}
		}
	}
}

// modelLabels are the values the model label may take: the model names and
// patterns that configurations name (client and upstream `models`, aliases,
// prices, the semantic cache's model). The model comes from the client:
// anything else is "other", so that no client can grow the label set. The
// set only grows, with the configs a process loads.
var modelLabels struct {
	mu       sync.Mutex
	patterns atomic.Pointer[[]string]
}

// addModelLabels makes names and glob patterns label values.
func addModelLabels(names []string) {
	modelLabels.mu.Lock()
	defer modelLabels.mu.Unlock()
	var cur []string
	if p := modelLabels.patterns.Load(); p != nil {
		cur = *p
	}
	next := slices.Clone(cur)
	for _, n := range names {
		if n != "" && n != "*" && !slices.Contains(next, n) {
			next = append(next, n)
		}
	}
	// Exact names first: a model that is named is labelled by its name,
	// not by a pattern it also matches.
	slices.SortStableFunc(next, func(a, b string) int {
		return cmp.Compare(boolInt(strings.ContainsAny(a, "*?[")), boolInt(strings.ContainsAny(b, "*?[")))
	})
	modelLabels.patterns.Store(&next)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// modelLabel is the model label of a request for model: the configured name
// or the first configured pattern it matches, else "other" ("none" when the
// request names no model).
func modelLabel(model string) string {
	if model == "" {
		return "none"
	}
	p := modelLabels.patterns.Load()
	if p == nil {
		return "other"
	}
	for _, pat := range *p {
		if pat == model {
			return pat
		}
		if ok, _ := path.Match(pat, model); ok {
			return pat
		}
	}
	return "other"
}

// The WebSocket sessions' metrics (websocket.go, wssession.go). Open
// sessions per key are a series of keyCollector's.
var (
	wsSessionsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "websocket_sessions",
		Help:      "WebSocket sessions open, by endpoint (realtime, responses).",
	}, []string{"endpoint"})

	wsSessionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "websocket_sessions_total",
		Help:      "WebSocket sessions opened, by endpoint.",
	}, []string{"endpoint"})

	wsMessagesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "websocket_messages_total",
		Help:      "WebSocket data messages relayed, by direction (up: client to upstream, down: upstream to client).",
	}, []string{"direction"})

	wsBytesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "openai_relay",
		Name:      "websocket_bytes_total",
		Help:      "Payload bytes of the WebSocket data messages relayed, by direction.",
	}, []string{"direction"})
)

// wsFlow counts the data messages relayed one way in a session: the
// session's sums (its placeholders) and the process's metrics, whose series
// are bound once (a message is counted without a label lookup).
type wsFlow struct {
	messages, bytes atomic.Int64
	metricMessages  prometheus.Counter
	metricBytes     prometheus.Counter
}

func newWSFlow(direction string) wsFlow {
	return wsFlow{metricMessages: wsMessagesTotal.WithLabelValues(direction), metricBytes: wsBytesTotal.WithLabelValues(direction)}
}

// add counts one message of n payload bytes.
func (f *wsFlow) add(n int) {
	f.messages.Add(1)
	f.bytes.Add(int64(n))
	f.metricMessages.Inc()
	f.metricBytes.Add(float64(n))
}
