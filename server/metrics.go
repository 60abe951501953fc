package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are the server's own Prometheus metrics.
type metrics struct {
	forwarded *prometheus.CounterVec
	reads     *prometheus.CounterVec
	rejected  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "forwarded_requests_total",
			Help: "Requests forwarded to the leader, by kind (propose, read_index).",
		}, []string{"kind"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "reads_total",
			Help: "Reads served, by consistency.",
		}, []string{"consistency"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "rejected_requests_total",
			Help: "Requests refused, by reason: in_flight (refused before any work) or the error reason (overloaded, invalid_argument, no_leader, ...).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.forwarded, m.reads, m.rejected)
	}
	return m
}
