package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// The audit log: one structured record (logger attribute log=audit) per
// control-plane call a member serves, membership, leadership, snapshots,
// backups and schema changes, with who called, from where, and how it
// ended. Data calls are not in it: they are the bulk of the traffic and
// their effects are in the replicated log.

// auditedMethods are the calls the audit log records.
var auditedMethods = map[string]bool{
	pb.ClusterService_Join_FullMethodName:               true,
	pb.ClusterService_TransferLeadership_FullMethodName: true,
	pb.ClusterService_PromoteMember_FullMethodName:      true,
	pb.ClusterService_RemoveMember_FullMethodName:       true,
	pb.ClusterService_Snapshot_FullMethodName:           true,
	pb.ClusterService_Backup_FullMethodName:             true,
	pb.SchemaService_CreateTable_FullMethodName:         true,
	pb.SchemaService_DropTable_FullMethodName:           true,
	pb.SchemaService_CreateIndex_FullMethodName:         true,
	pb.SchemaService_DropIndex_FullMethodName:           true,
}

// callerOf names who made a call and from where: the common name of the
// client certificate the member verified, or "anonymous"; and the
// connection's remote address.
func callerOf(ctx context.Context) (identity, source string) {
	identity = "anonymous"
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity, ""
	}
	if p.Addr != nil {
		source = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
		if cn := certName(ti.State.VerifiedChains[0][0]); cn != "" {
			identity = cn
		}
	}
	return identity, source
}

// audit records a control-plane call that ended with err after took.
func (s *Server) audit(ctx context.Context, method string, err error, took time.Duration) {
	identity, source := callerOf(ctx)
	attrs := []any{"method", method, "identity", identity, "source", source,
		"code", status.Code(err).String(), "took", took, "request_id", requestID(ctx)}
	if by := forwardedBy(ctx); by != "" {
		attrs = append(attrs, "forwarded_by", by)
	}
	if err != nil {
		attrs = append(attrs, "err", status.Convert(err).Message())
	}
	s.auditLog.Info("control-plane call", attrs...)
}

// newAuditLogger is the audit log's logger, derived from the server's.
func newAuditLogger(lg *slog.Logger) *slog.Logger { return lg.With("log", "audit") }
