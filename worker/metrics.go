package worker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Outcomes of one delivery, the values of the outcome label.
const (
	OutcomeOK           = "ok"            // handled and acked
	OutcomeRetried      = "retried"       // failed; sent to a delay queue with attempt+1
	OutcomeDeadLettered = "dead-lettered" // failed MaxAttempts times (or permanently); in the DLQ
	OutcomeDuplicate    = "duplicate"     // already done under this event id; acked without acting
	OutcomePoison       = "poison"        // not a CloudEvent; in the DLQ at once
	OutcomeDeferred     = "deferred"      // another delivery holds the claim, or Redis is down; delayed, attempt unchanged
	OutcomeRequeued     = "requeued"      // could not be forwarded to retry/DLQ; returned to the queue
)

type metrics struct {
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	connected  prometheus.Gauge
}

// newMetrics registers the worker's metrics with reg; a nil reg registers nothing.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		deliveries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_worker_deliveries_total",
			Help: "Deliveries processed, by handler and outcome (ok, retried, dead-lettered, duplicate, poison, deferred, requeued).",
		}, []string{"handler", "outcome"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "harvest_worker_handle_duration_seconds",
			Help:    "Time a handler's action took, successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9), // 1ms .. 65s
		}, []string{"handler"}),
		inFlight: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "harvest_worker_in_flight",
			Help: "Deliveries being processed now.",
		}, []string{"handler"}),
		connected: f.NewGauge(prometheus.GaugeOpts{
			Name: "harvest_worker_connected",
			Help: "1 while connected to the broker and consuming, else 0.",
		}),
	}
}
