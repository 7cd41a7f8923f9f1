package server

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the xDS server's Prometheus metrics.
type Metrics struct {
	ConnectedProxies prometheus.Gauge
	Pushes           *prometheus.CounterVec
	Nacks            *prometheus.CounterVec
	Rejected         *prometheus.CounterVec

	// pushes caches the Pushes counter of each type URL: every response
	// counts, so the label lookup is done once per type.
	pushes sync.Map
}

// pushed counts one response of a type.
func (m *Metrics) pushed(typeURL string) {
	c, ok := m.pushes.Load(typeURL)
	if !ok {
		c, _ = m.pushes.LoadOrStore(typeURL, m.Pushes.WithLabelValues(shortType(typeURL)))
	}
	c.(prometheus.Counter).Inc()
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ConnectedProxies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_xds_connected_proxies",
			Help: "Number of proxies with an open, authenticated xDS stream.",
		}),
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_pushes_total",
			Help: "xDS responses sent to proxies, by resource type.",
		}, []string{"type"}),
		Nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_nacks_total",
			Help: "xDS responses proxies rejected, by resource type.",
		}, []string{"type"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_streams_refused_total",
			Help: "xDS streams refused because the peer may not have the node's configuration, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.ConnectedProxies, m.Pushes, m.Nacks, m.Rejected)
	}
	return m
}

// shortType turns a type URL into the resource kind for metric labels.
func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}
