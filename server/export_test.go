package server

import "github.com/prometheus/client_golang/prometheus/testutil"

// SetReadIndexStreamServed turns the leader side of the read-index stream
// on or off for every server in the process.
func SetReadIndexStreamServed(on bool) { noReadIndexStream.Store(!on) }

// Forwarded returns the server's count of requests forwarded to the
// leader of kind.
func Forwarded(s *Server, kind string) float64 {
	return testutil.ToFloat64(s.metrics.forwarded.WithLabelValues(kind))
}
