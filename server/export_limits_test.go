package server

import "github.com/prometheus/client_golang/prometheus/testutil"

// HoldResponseBytes reserves n bytes of s's budget of response bytes in
// flight, as a response being built does, and returns their release.
func HoldResponseBytes(s *Server, n int) (func(), error) { return s.reserveResponse(n) }

// ResponseBytesInFlight returns the bytes reserved in s's budget, as its
// gauge exports them.
func ResponseBytesInFlight(s *Server) int64 { return s.metrics.responseBytes.used.Load() }

// ResponseLimitRefusals returns s's count of refusals by the response
// limit named by its flag.
func ResponseLimitRefusals(s *Server, flag string) float64 {
	return testutil.ToFloat64(s.metrics.responseLimited.WithLabelValues(flag))
}
