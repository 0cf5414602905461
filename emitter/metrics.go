package emitter

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	published, confirmed, nacked, outboxed, drained prometheus.Counter
	lost, refused, quarantined, recovered           prometheus.Counter
	latency                                         prometheus.Histogram
	all                                             []prometheus.Collector
}

func newMetrics(e *Emitter) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "harvest", Subsystem: "events", Name: name, Help: help})
	}
	m := &metrics{
		published: counter("published_total", "Events published to the broker (live and from the outbox)."),
		confirmed: counter("confirmed_total", "Events the broker confirmed."),
		nacked:    counter("nacked_total", "Publishes the broker refused with basic.nack."),
		outboxed:  counter("outboxed_total", "Events written to the disk outbox."),
		drained:   counter("drained_total", "Outbox events confirmed by the broker and released."),
		lost: counter("lost_total", "Events of successful writes neither confirmed nor kept in the outbox "+
			"(disk failure, emitter closed, unparseable upstream answer); each is logged at error level."),
		quarantined: counter("quarantined_total", "Outbox records that passed their checksum but did not decode, "+
			"set aside in the outbox's quarantine/ directory; each is logged at error level."),
		recovered: counter("recovered_total", "Events of writes whose outcome was open (a crash, an unknown upstream answer) "+
			"kept after resolving them against the upstream or replaying their landed record."),
		refused: counter("refused_writes_total", "Writes refused (503) before forwarding because their events could not be kept: the outbox at its cap, "+
			"the disk nearly full or failing."),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "harvest", Subsystem: "events", Name: "publish_seconds",
			Help:    "Time from publishing a batch of events to all of its confirms.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	m.all = []prometheus.Collector{m.published, m.confirmed, m.nacked, m.outboxed, m.drained, m.lost, m.refused, m.quarantined, m.recovered, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "harvest", Subsystem: "events", Name: "outbox_depth_events",
			Help: "Events in the outbox not yet confirmed."}, func() float64 { return float64(e.box.Pending()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "harvest", Subsystem: "events", Name: "open_intents",
			Help: "Writes recorded before forwarding and not yet finished: in flight, or waiting to be resolved " +
				"against the upstream (a crash, an unknown answer)."}, func() float64 { return float64(e.in.journal.OpenCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "harvest", Subsystem: "events", Name: "outbox_bytes",
			Help: "Size of the outbox segment files."}, func() float64 { return float64(e.box.Bytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "harvest", Subsystem: "events", Name: "broker_connected",
			Help: "1 while a confirm-mode channel to the broker is open."}, func() float64 {
			if e.Connected() {
				return 1
			}
			return 0
		}),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range m.all {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
