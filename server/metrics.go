package server

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's own Prometheus metrics.
type metrics struct {
	forwarded *prometheus.CounterVec
	reads     *prometheus.CounterVec
	rejected  *prometheus.CounterVec

	watchEvents prometheus.Counter
	watchEnded  *prometheus.CounterVec
	watchDelay  prometheus.Histogram

	checks    *prometheus.CounterVec
	divergent prometheus.Gauge

	// responseBytes is the member's budget of response bytes in flight
	// (Limits.MaxResponseBytesInFlight, reserveResponse); it lives with
	// the metrics, whose gauge reads it.
	responseBytes responseBudget
	// responseLimited counts refusals by a response limit, by its flag.
	responseLimited *prometheus.CounterVec
}

// responseBudget counts the bytes of the responses being built; a
// response reserves its size before it is built and releases it when
// its handler returns.
type responseBudget struct{ used atomic.Int64 }

// reserve takes n bytes unless that would take the bytes in use over
// limit; it returns whether it did and the bytes in use it saw.
func (b *responseBudget) reserve(n, limit int64) (bool, int64) {
	for {
		cur := b.used.Load()
		if cur+n > limit {
			return false, cur
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true, cur + n
		}
	}
}

func (b *responseBudget) release(n int64) { b.used.Add(-n) }

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "forwarded_requests_total",
			Help: "Requests forwarded to the leader, by kind: propose, read_index (on the read-index stream), read_index_call (one call each, to a leader without the stream); " +
				"to_client_port counts peer calls sent to the client port of a member of an older version (during a rolling upgrade).",
		}, []string{"kind"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "reads_total",
			Help: "Reads served, by consistency.",
		}, []string{"consistency"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "rejected_requests_total",
			Help: "Requests refused, by reason: in_flight (refused before any work) or the error reason (overloaded, invalid_argument, no_leader, ...).",
		}, []string{"reason"}),
		watchEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "memdb", Name: "watch_events_sent_total",
			Help: "Events sent on watch streams.",
		}),
		watchEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "watch_streams_ended_total",
			Help: "Watch streams the server ended, by reason: compacted, too_slow, dropped, shutdown.",
		}, []string{"reason"}),
		watchDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "memdb", Name: "watch_event_delay_seconds",
			Help:    "Time from applying a change to handing its event to the stream.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "consistency_checks_total",
			Help: "Comparisons of a state checkpoint with the other members' (each round compares every checkpoint kept), by result: match or mismatch.",
		}, []string{"result"}),
		divergent: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "memdb", Name: "state_divergent",
			Help: "1 once this member's state hash differed from the majority's at a checkpoint: its data cannot be trusted; replace it.",
		}),
		responseLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "memdb", Name: "response_limit_refusals_total",
			Help: "Requests refused by a response limit, by the limit's flag: max-response-bytes (RESPONSE_TOO_LARGE) or max-response-bytes-in-flight (OVERLOADED). " +
				"memdb_rejected_requests_total counts them too, by reason.",
		}, []string{"limit"}),
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "memdb", Name: "response_bytes_in_flight",
		Help: "Bytes reserved by the responses being built, against --max-response-bytes-in-flight (responses under 64 KiB reserve nothing).",
	}, func() float64 { return float64(m.responseBytes.used.Load()) })
	if reg != nil {
		reg.MustRegister(m.forwarded, m.reads, m.rejected, m.watchEvents, m.watchEnded, m.watchDelay, m.checks, m.divergent,
			m.responseLimited, inFlight)
	}
	return m
}
