package proxy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/classify"
)

// metrics are the proxy's own Prometheus series (the cache tiers register theirs), and
// a few plain counters for GET /_proxy/stats.
type metrics struct {
	requests       *prometheus.CounterVec   // by op and cache result
	upstream       *prometheus.HistogramVec // upstream latency by op
	upstreamErrors *prometheus.CounterVec   // by op and reason
	readsAvoided   prometheus.Counter       // billed document reads served from cache
	writes         *prometheus.CounterVec   // writes by op and outcome
	inflight       prometheus.GaugeFunc     // reads inflightN
	rejected       *prometheus.CounterVec   // requests fasthttp could not parse, by reason

	inflightN atomic.Int64
	byResult  [len(resultNames)]atomic.Int64
	saved     atomic.Int64
	// children caches requests' child counter per op and result, made on first use
	// (so /metrics shows only series that happened): the hot path does no label
	// hashing or map lookup.
	children [maxOp][len(resultNames)]atomic.Pointer[prometheus.Counter]
}

// result indexes resultNames.
type result uint8

const (
	resultHitL1 result = iota
	resultHitL2
	resultMiss
	resultStale
	resultBypass
	resultError
	resultHitView // answered from a live view of the Listen fan-out (viewread.go)
)

// maxOp bounds classify.Op values for the per-op caches; an op beyond it (a newer
// classify) is counted through WithLabelValues.
const maxOp = 32

// resultNames are the X-Cache values, plus ERROR for the proxy's own failures.
var resultNames = [...]string{"HIT-L1", "HIT-L2", "MISS", "STALE", "BYPASS", "ERROR", "HIT-VIEW"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_proxy_requests_total",
			Help: "Requests by Firestore method and cache result (HIT-L1, HIT-L2, MISS, STALE, BYPASS, ERROR).",
		}, []string{"op", "cache"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "harvest_proxy_upstream_duration_seconds",
			Help:    "Time the upstream took to answer, by Firestore method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_proxy_upstream_errors_total",
			Help: "Upstream failures: transport errors and 5xx answers, by Firestore method.",
		}, []string{"op", "reason"}),
		readsAvoided: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_proxy_billed_reads_avoided_total",
			Help: "Billed document reads saved: documents in each answer served from cache.",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_proxy_writes_total",
			Help: "Writes by Firestore method and outcome (ok, failed, unknown).",
		}, []string{"op", "outcome"}),
	}
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "harvest_proxy_rejected_requests_total",
		Help: "Requests the proxy could not read as HTTP/1.1 (each closes its connection), by reason: " +
			"unsupported_protocol, headers_too_large, body_too_large, timeout, malformed.",
	}, []string{"reason"})
	m.inflight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_proxy_inflight_requests",
		Help: "Requests being served now.",
	}, func() float64 { return float64(m.inflightN.Load()) })
	if reg != nil {
		reg.MustRegister(m.requests, m.upstream, m.upstreamErrors, m.readsAvoided, m.writes, m.inflight, m.rejected)
	}
	return m
}

// requestOp counts one answered request. It is on the hot path: no label hashing
// after the first call per op and result.
func (m *metrics) requestOp(op classify.Op, r result) {
	m.byResult[r].Add(1)
	if int(op) >= maxOp {
		m.requests.WithLabelValues(op.String(), resultNames[r]).Inc()
		return
	}
	slot := &m.children[op][r]
	c := slot.Load()
	if c == nil {
		child := m.requests.WithLabelValues(op.String(), resultNames[r])
		slot.CompareAndSwap(nil, &child)
		c = slot.Load()
	}
	(*c).Inc()
}

func (m *metrics) served(docs int) {
	m.readsAvoided.Add(float64(docs))
	m.saved.Add(int64(docs))
}

func (m *metrics) results() map[string]int64 {
	out := make(map[string]int64, len(resultNames))
	for i, n := range resultNames {
		out[n] = m.byResult[i].Load()
	}
	return out
}
