package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cache's Prometheus collectors. A nil *Metrics records nothing, so
// components work without metrics in tests.
type Metrics struct {
	evictions     prometheus.Counter
	redisErrors   *prometheus.CounterVec
	subscribed    prometheus.Gauge
	resubscribes  prometheus.Counter
	bumps         prometheus.Counter
	ackWaits      prometheus.Counter
	ackTimeouts   prometheus.Counter
	l2StaleRefuse prometheus.Counter
	trusted       prometheus.Gauge
	leaseLapses   prometheus.Counter
	pending       prometheus.Gauge
	lost          prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered). Names start with harvest_cache_.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_l1_evictions_total",
			Help: "L1 entries evicted to stay within the byte or entry bound.",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_cache_redis_errors_total",
			Help: "Redis calls that failed or timed out, by operation; each was treated as a miss.",
		}, []string{"op"}),
		subscribed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "harvest_cache_invalidation_subscribed",
			Help: "1 while subscribed to cross-replica invalidations, 0 otherwise.",
		}),
		resubscribes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_invalidation_subscriptions_total",
			Help: "Subscriptions to the invalidation channel; each one started a new local epoch.",
		}),
		bumps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_invalidations_total",
			Help: "Tag generations bumped by this replica.",
		}),
		ackWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_bump_ack_waits_total",
			Help: "Bumps that waited for every replica to acknowledge (read-your-writes).",
		}),
		ackTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_bump_ack_timeouts_total",
			Help: "Acknowledgement waits that ended at the invalidation lease before every replica answered.",
		}),
		l2StaleRefuse: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_l2_stale_fills_refused_total",
			Help: "L2 stores refused because a tag was bumped after the read began.",
		}),
		trusted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "harvest_cache_l1_trusted",
			Help: "1 while L1 is trusted (subscribed, within the invalidation lease, no failed invalidation pending); 0: L1 serves only consistency: eventual rules.",
		}),
		leaseLapses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_invalidation_lease_lapses_total",
			Help: "Times L1 stopped being trusted because nothing was heard from the invalidation bus within the lease.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "harvest_cache_invalidations_pending",
			Help: "Tags whose invalidation Redis did not take, waiting to be replayed (L1 untrusted meanwhile).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_cache_invalidations_lost_total",
			Help: "Failed invalidations dropped beyond the replay bound (other replicas may serve what they outdated until the TTL).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.evictions, m.redisErrors, m.subscribed, m.resubscribes,
			m.bumps, m.ackWaits, m.ackTimeouts, m.l2StaleRefuse, m.trusted, m.leaseLapses,
			m.pending, m.lost)
	}
	return m
}

// registerL1 exports L1's size as gauges read at scrape time (no cost per Add).
func (m *Metrics) registerL1(reg prometheus.Registerer, c *L1) {
	if m == nil || reg == nil {
		return
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "harvest_cache_l1_bytes",
			Help: "Bytes held by L1 (sum of entry sizes).",
		}, func() float64 { return float64(c.Bytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "harvest_cache_l1_entries",
			Help: "Entries held by L1.",
		}, func() float64 { return float64(c.Len()) }),
	)
}

func (m *Metrics) l1Evicted(n int) {
	if m != nil {
		m.evictions.Add(float64(n))
	}
}

func (m *Metrics) redisError(op string) {
	if m != nil {
		m.redisErrors.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) setSubscribed(on bool) {
	if m == nil {
		return
	}
	if on {
		m.subscribed.Set(1)
		m.resubscribes.Inc()
	} else {
		m.subscribed.Set(0)
	}
}

func (m *Metrics) bumped(tags int) {
	if m != nil {
		m.bumps.Add(float64(tags))
	}
}

func (m *Metrics) ackWaited(timedOut bool) {
	if m == nil {
		return
	}
	m.ackWaits.Inc()
	if timedOut {
		m.ackTimeouts.Inc()
	}
}

func (m *Metrics) staleFillRefused() {
	if m != nil {
		m.l2StaleRefuse.Inc()
	}
}

func (m *Metrics) setTrusted(on bool) {
	if m == nil {
		return
	}
	if on {
		m.trusted.Set(1)
	} else {
		m.trusted.Set(0)
	}
}

func (m *Metrics) leaseLapsed() {
	if m != nil {
		m.leaseLapses.Inc()
	}
}

func (m *Metrics) setPending(n int) {
	if m != nil {
		m.pending.Set(float64(n))
	}
}

func (m *Metrics) invalidationsLost(n int) {
	if m != nil {
		m.lost.Add(float64(n))
	}
}
