package client

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// Credentials identify a client by user name and password when the
// cluster has access control on (the other way is a TLS client
// certificate named after the user, Config.TLS). They travel with every
// call as the metadata "authorization: Bearer <user>:<password>", which
// members check against the salted hash they keep; use TLS beyond
// loopback, or the password crosses the network in the clear.
type Credentials struct {
	User     string
	Password string
}

// PerRPC returns the credentials as gRPC per-call credentials, for
// connections made outside the SDK (grpc.WithPerRPCCredentials).
func (c Credentials) PerRPC() credentials.PerRPCCredentials {
	return bearer{md: map[string]string{"authorization": "Bearer " + c.User + ":" + c.Password}}
}

// bearer hands gRPC the same metadata map on every call (gRPC only reads
// it): nothing to build per request.
type bearer struct{ md map[string]string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return b.md, nil
}

// RequireTransportSecurity is false so that a loopback cluster without
// TLS can use access control too; members beyond loopback refuse to start
// without TLS unless told --insecure.
func (bearer) RequireTransportSecurity() bool { return false }
