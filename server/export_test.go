package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
)

// SetReadIndexStreamServed turns the leader side of the read-index stream
// on or off for every server in the process.
func SetReadIndexStreamServed(on bool) { noReadIndexStream.Store(!on) }

// Forwarded returns the server's count of requests forwarded to the
// leader of kind.
func Forwarded(s *Server, kind string) float64 {
	return testutil.ToFloat64(s.metrics.forwarded.WithLabelValues(kind))
}

// Admit runs h as the handler of a unary request through the server's
// admission (in-flight limit, default deadline).
func Admit(s *Server, ctx context.Context, h func(ctx context.Context) error) error {
	_, err := s.admitUnary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/test/Admit"}, func(ctx context.Context, _ any) (any, error) {
		return nil, h(ctx)
	})
	return err
}
