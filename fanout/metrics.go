package fanout

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the hub's Prometheus series; gauges are read from the hub when scraped.
type metrics struct {
	upstreamTargets *prometheus.GaugeVec   // views listened upstream, by mode
	sent            *prometheus.CounterVec // document messages sent to clients: "view" or "passthrough"
	received        *prometheus.CounterVec // document messages received upstream: shared, per_caller, passthrough
	slowClients     prometheus.Counter
}

func newMetrics(h *Hub, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		upstreamTargets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "harvest_fanout_upstream_targets",
			Help: "Upstream Listen targets held for shared views (lingering ones included), by mode (shared, per_caller).",
		}, []string{"mode"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_fanout_documents_sent_total",
			Help: "Document messages (changes, deletes, removes) streamed to Listen clients, by source (view, passthrough).",
		}, []string{"source"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_fanout_documents_received_total",
			Help: "Document messages received from upstream Listen streams, by mode (shared, per_caller, passthrough).",
		}, []string{"mode"}),
		slowClients: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "harvest_fanout_slow_clients_total",
			Help: "Client Listen streams ended with RESOURCE_EXHAUSTED for falling too far behind.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	clientTargets := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_fanout_client_targets",
		Help: "Client Listen targets being served (all modes).",
	}, func() float64 { s := h.Stats(); return float64(s.ClientTargets) })
	ratio := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_fanout_ratio",
		Help: "Client targets served from views per upstream view target (1 when nothing is shared).",
	}, func() float64 { return h.Stats().FanoutRatio })
	avoided := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_fanout_billed_reads_avoided",
		Help: "Billed Listen reads avoided by fan-out: documents sent to clients from views minus documents the views received upstream (negative while lingering views cost more than they served).",
	}, func() float64 { return float64(h.Stats().BilledReadsAvoided) })
	streams := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_fanout_client_streams",
		Help: "Client Listen streams being served.",
	}, func() float64 { return float64(h.clients.Load()) })
	for _, c := range []prometheus.Collector{m.upstreamTargets, m.sent, m.received, m.slowClients, clientTargets, ratio, avoided, streams} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("fanout: metrics already registered (one Hub per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

// Stats is the hub's state for GET /_proxy/stats.
type Stats struct {
	// ClientStreams is the number of client Listen streams being served.
	ClientStreams int64 `json:"client_streams"`
	// ClientTargets is the number of client targets, all modes; ViewTargets those
	// served from views (Shared and PerCaller).
	ClientTargets int64 `json:"client_targets"`
	ViewTargets   int64 `json:"view_targets"`
	// UpstreamTargets is the number of views listened upstream (lingering included).
	UpstreamTargets int64 `json:"upstream_targets"`
	// FanoutRatio is ViewTargets per UpstreamTarget (1 with no view).
	FanoutRatio float64 `json:"fanout_ratio"`
	// DocumentsSent and DocumentsReceived count document messages sent to clients from
	// views and received upstream by views; BilledReadsAvoided is their difference.
	DocumentsSent      uint64 `json:"documents_sent"`
	DocumentsReceived  uint64 `json:"documents_received"`
	BilledReadsAvoided int64  `json:"billed_reads_avoided"`
	// SlowClients counts client streams ended for falling too far behind.
	SlowClients uint64 `json:"slow_clients"`
}

// Stats summarises the hub. Documents received by running views are counted at their
// snapshots.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	views := int64(len(h.views))
	h.mu.Unlock()
	s := Stats{
		ClientStreams:     h.clients.Load(),
		ViewTargets:       h.clientTargets[Shared].Load() + h.clientTargets[PerCaller].Load(),
		UpstreamTargets:   views,
		DocumentsSent:     h.sent.Load(),
		DocumentsReceived: h.received.Load(),
		SlowClients:       h.slowClients.Load(),
	}
	s.ClientTargets = s.ViewTargets + h.clientTargets[Passthrough].Load()
	s.FanoutRatio = 1
	if views > 0 {
		s.FanoutRatio = float64(s.ViewTargets) / float64(views)
	}
	s.BilledReadsAvoided = int64(s.DocumentsSent) - int64(s.DocumentsReceived)
	return s
}
