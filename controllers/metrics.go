package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the mesh controller's Prometheus metrics.
type Metrics struct {
	TranslateDuration   prometheus.Histogram
	PropagationDuration prometheus.Histogram
	StatusWrites        *prometheus.CounterVec
	// Rebuilds counts publishes by kind: "mesh" (the whole mesh
	// translated again) or "endpoints" (endpoint lists alone).
	Rebuilds *prometheus.CounterVec
	// SMISplitReady is 1 for each SMI TrafficSplit in effect and 0 for
	// one that is not, with the reason.
	SMISplitReady *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		TranslateDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_translate_duration_seconds",
			Help:    "Time to list, ingest and translate the whole mesh and publish every proxy's configuration.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		PropagationDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_config_propagation_seconds",
			Help:    "Time from the first object change of a rebuild to the acknowledgement of every connected proxy whose configuration it changed.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		StatusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_status_writes_total",
			Help: "Status updates written, by kind and result.",
		}, []string{"kind", "result"}),
		Rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_rebuilds_total",
			Help: "Configuration publishes, by kind: mesh (everything translated again) or endpoints (only EndpointSlices changed, their endpoints published alone).",
		}, []string{"kind"}),
		SMISplitReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_smi_trafficsplit_ready",
			Help: "1 when an SMI TrafficSplit is in effect, 0 when it is not; reason says why (Ready, Overridden, Conflicted, UnsupportedValue, TargetNotFound, BackendNotFound).",
		}, []string{"namespace", "name", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.TranslateDuration, m.PropagationDuration, m.StatusWrites, m.Rebuilds, m.SMISplitReady)
	}
	return m
}
