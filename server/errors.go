package server

import (
	"context"
	"errors"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/watch"
)

// retryAfter is the pause suggested to clients refused for overload.
const retryAfter = 50 * time.Millisecond

// statusErr builds a status with the reason's code and an ErrorInfo.
func statusErr(reason, msg string, meta map[string]string, retry time.Duration) error {
	return statusCode(pb.CodeOf(reason), reason, msg, meta, retry)
}

func statusCode(code codes.Code, reason, msg string, meta map[string]string, retry time.Duration) error {
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: pb.ErrorDomain, Metadata: meta}
	var err error
	if retry > 0 {
		st, err = st.WithDetails(info, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	} else {
		st, err = st.WithDetails(info)
	}
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// toStatus is the one table from domain errors to gRPC statuses. Every
// handler returns through it.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (a forwarded call's answer)
	}
	var le *limitError
	if errors.As(err, &le) {
		return withLimit(toStatus(le.err), le.flag)
	}
	var de *deniedError
	if errors.As(err, &de) {
		return statusErr(pb.ReasonPermissionDenied, de.Error(), map[string]string{pb.MetaPermission: de.need.String()}, 0)
	}
	switch {
	case errors.Is(err, errUnauthenticated):
		return statusErr(pb.ReasonUnauthenticated, err.Error(), nil, 0)
	case errors.Is(err, errDenied):
		return statusErr(pb.ReasonPermissionDenied, err.Error(), nil, 0)
	}
	var nl *node.NotLeaderError
	var ce *fsm.CommandError
	var wc *watch.ErrCompacted
	var ws *watch.ErrTooSlow
	var wd *watch.ErrDropped
	switch {
	case errors.As(err, &wc):
		return statusErr(pb.ReasonWatchCompacted, "watch: "+err.Error()+"; re-list (snapshot) and watch from there",
			map[string]string{pb.MetaOldestRevision: strconv.FormatUint(wc.Oldest, 10)}, 0)
	case errors.As(err, &ws):
		return statusErr(pb.ReasonWatchTooSlow, "watch: "+err.Error(), map[string]string{pb.MetaRevision: strconv.FormatUint(ws.Delivered, 10)}, retryAfter)
	case errors.As(err, &wd):
		return statusErr(pb.ReasonWatchEnded, "watch: "+err.Error(), map[string]string{pb.MetaRevision: strconv.FormatUint(wd.Rev, 10)}, 0)
	case errors.Is(err, watch.ErrClosed):
		return statusErr(pb.ReasonNotLeader, "the node is shutting down; resume the watch on another member", nil, retryAfter)
	case errors.As(err, &ce):
		var meta map[string]string
		if ce.Reason == pb.ReasonOutcomeNotKept {
			meta = map[string]string{pb.MetaRevision: strconv.FormatUint(ce.Revision, 10)}
		}
		return statusErr(ce.Reason, ce.Message, meta, 0)
	case errors.Is(err, node.ErrOutcomeUnknown):
		meta := map[string]string{pb.MetaOutcome: "unknown"}
		if errors.As(err, &nl) {
			meta[pb.MetaLeaderID], meta[pb.MetaLeaderAddr] = nl.LeaderID, nl.LeaderAddr
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return statusCode(codes.DeadlineExceeded, pb.ReasonNotLeader, err.Error(), meta, 0)
		}
		return statusErr(pb.ReasonNotLeader, err.Error(), meta, 0)
	case errors.As(err, &nl):
		if nl.LeaderID == "" {
			return statusErr(pb.ReasonNoLeader, "no leader is known; an election may be under way, retry shortly", nil, retryAfter)
		}
		return statusErr(pb.ReasonNotLeader, err.Error(), map[string]string{pb.MetaLeaderID: nl.LeaderID, pb.MetaLeaderAddr: nl.LeaderAddr}, 0)
	case errors.Is(err, node.ErrNoLeader):
		return statusErr(pb.ReasonNoLeader, "no leader is known; an election may be under way, retry shortly", nil, retryAfter)
	case errors.Is(err, node.ErrNotReady):
		return statusErr(pb.ReasonNoLeader, "the leader was just elected and is not ready yet; retry shortly", nil, retryAfter)
	case errors.Is(err, node.ErrOverloaded), errors.Is(err, errOverloaded):
		return statusErr(pb.ReasonOverloaded, err.Error(), nil, retryAfter)
	case errors.Is(err, node.ErrShutdown):
		return statusErr(pb.ReasonNotLeader, "the node is shutting down; use another member", nil, retryAfter)
	case errors.Is(err, fsm.ErrHalted):
		return statusErr(pb.ReasonHalted, err.Error(), nil, 0)
	case errors.Is(err, errStale):
		return statusErr(pb.ReasonStale, err.Error(), nil, retryAfter)
	case errors.Is(err, errPageExpired):
		return statusErr(pb.ReasonPageExpired, err.Error(), nil, 0)
	case errors.Is(err, node.ErrLevelUnknown):
		return statusErr(pb.ReasonNotReady, err.Error(), nil, retryAfter)
	case errors.Is(err, node.ErrFeatureLevel):
		return statusErr(pb.ReasonUnsupported, err.Error(), nil, 0)
	case errors.Is(err, errDiverged):
		return statusErr(pb.ReasonDiverged, err.Error(), nil, 0)
	case errors.Is(err, errQuotaExceeded):
		return statusErr(pb.ReasonQuotaExceeded, err.Error(), nil, 0)
	case errors.Is(err, errResponseTooLarge):
		return statusErr(pb.ReasonResponseTooLarge, err.Error(), nil, 0)
	case errors.Is(err, errPrecondition):
		return statusErr(pb.ReasonPrecondition, err.Error(), nil, 0)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	reason := fsm.Reason(err)
	return statusErr(reason, err.Error(), nil, 0)
}

// limitError is a refusal by a configured limit: toStatus maps the error
// it wraps and names the limit's flag in the ErrorInfo metadata
// (memdbv1.MetaLimit), so that a person knows which setting to look at.
type limitError struct {
	flag string // the command-line flag, without dashes
	err  error
}

func (e *limitError) Error() string { return e.err.Error() + " (limit --" + e.flag + ")" }
func (e *limitError) Unwrap() error { return e.err }

// overLimit marks err as a refusal by the limit set with --flag.
func overLimit(flag string, err error) error { return &limitError{flag: flag, err: err} }

// withLimit adds the limit's flag to a status error's ErrorInfo.
func withLimit(err error, flag string) error {
	st := status.Convert(err)
	p := st.Proto()
	for _, a := range p.Details {
		var info errdetails.ErrorInfo
		if a.UnmarshalTo(&info) != nil {
			continue
		}
		if info.Metadata == nil {
			info.Metadata = map[string]string{}
		}
		info.Metadata[pb.MetaLimit] = flag
		if a.MarshalFrom(&info) != nil {
			return err
		}
	}
	return status.ErrorProto(p)
}

var (
	errOverloaded  = errors.New("server overloaded")
	errStale       = errors.New("staleness bound not met")
	errPageExpired = errors.New("page token expired")
	// errDiverged: the consistency check found this member's state
	// differs from the majority's.
	errDiverged = errors.New("this member's state diverged from the other members'")
	// errQuotaExceeded: the data reached Limits.MaxDataBytes.
	errQuotaExceeded = errors.New("data quota exceeded")
	// errResponseTooLarge: the answer would exceed
	// Limits.MaxResponseBytes.
	errResponseTooLarge = errors.New("response too large")
	// errPrecondition: an admin change the cluster's state does not allow
	// now (an unready member, a quorum at risk).
	errPrecondition = errors.New("precondition failed")
)
