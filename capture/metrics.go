package capture

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Runner's: per watch (label watch, e.g. "collection group orders").
type metrics struct {
	r *Runner

	changes *prometheus.CounterVec // changes acted on, by kind
	events  *prometheus.CounterVec // events emitted, by type

	documents, resets, reconnects, age, held *prometheus.Desc
}

func newMetrics(r *Runner) *metrics {
	label := []string{"watch"}
	return &metrics{
		r: r,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_capture_changes_total",
			Help: "Document changes change capture saw on a watch and acted on (invalidated), by kind (changed, deleted, removed).",
		}, []string{"watch", "kind"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_capture_events_total",
			Help: "Events change capture emitted, by type (created, updated, deleted).",
		}, []string{"watch", "type"}),
		documents: prometheus.NewDesc("harvest_capture_documents_streamed_total",
			"Document messages the upstream streamed to this replica's watch (each one a billed read in production).", label, nil),
		resets: prometheus.NewDesc("harvest_capture_resets_total",
			"Times a watch's view was rebuilt from a complete listen (resume refused, RESET, existence-filter mismatch): each reads every document of the target again.", label, nil),
		reconnects: prometheus.NewDesc("harvest_capture_reconnects_total",
			"Listen streams a watch reopened after a failure.", label, nil),
		age: prometheus.NewDesc("harvest_capture_resume_age_seconds",
			"Seconds since the read time of the last snapshot this replica's watch finished (how far behind a resume would start); absent where the replica does not hold the watch.", label, nil),
		held: prometheus.NewDesc("harvest_capture_lease_held",
			"1 when this replica holds the watch's lease and runs it, else 0.", label, nil),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.changes.Describe(ch)
	m.events.Describe(ch)
	for _, d := range []*prometheus.Desc{m.documents, m.resets, m.reconnects, m.age, m.held} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.changes.Collect(ch)
	m.events.Collect(ch)
	m.r.mu.Lock()
	targets := make([]*target, 0, len(m.r.targets))
	for _, t := range m.r.targets {
		targets = append(targets, t)
	}
	m.r.mu.Unlock()
	for _, t := range targets {
		st, held := t.stats()
		l := t.spec.label()
		ch <- prometheus.MustNewConstMetric(m.documents, prometheus.CounterValue, float64(st.Documents), l)
		ch <- prometheus.MustNewConstMetric(m.resets, prometheus.CounterValue, float64(st.Resets), l)
		ch <- prometheus.MustNewConstMetric(m.reconnects, prometheus.CounterValue, float64(st.Reconnects), l)
		h := 0.0
		if held {
			h = 1
			if !st.ReadTime.IsZero() {
				ch <- prometheus.MustNewConstMetric(m.age, prometheus.GaugeValue, time.Since(st.ReadTime).Seconds(), l)
			}
		}
		ch <- prometheus.MustNewConstMetric(m.held, prometheus.GaugeValue, h, l)
	}
}
