package client

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Errors returned by the client; test with errors.Is. Every error from a
// call is an *Error that unwraps to one of these.
var (
	ErrNotFound        = errors.New("memdb: row not found")
	ErrTableNotFound   = errors.New("memdb: table not found")
	ErrTableExists     = errors.New("memdb: table already exists")
	ErrIndexNotFound   = errors.New("memdb: index not found")
	ErrIndexExists     = errors.New("memdb: index already exists")
	ErrRowExists       = errors.New("memdb: row already exists")
	ErrUniqueViolation = errors.New("memdb: unique index violation")
	ErrVersionMismatch = errors.New("memdb: version mismatch")
	ErrInvalidArgument = errors.New("memdb: invalid argument")
	ErrTypeMismatch    = errors.New("memdb: type mismatch")
	ErrTooLarge        = errors.New("memdb: too large")
	ErrTooManyOps      = errors.New("memdb: too many operations")
	ErrUnavailable     = errors.New("memdb: unavailable")
	ErrOverloaded      = errors.New("memdb: overloaded")
	ErrStale           = errors.New("memdb: staleness bound not met")
	ErrPageExpired     = errors.New("memdb: page token expired")
	ErrPrecondition    = errors.New("memdb: the cluster's state does not allow this now")
	ErrSessionLimit    = errors.New("memdb: session limit")
	ErrHalted          = errors.New("memdb: server halted")
	ErrCorrupt         = errors.New("memdb: data corrupt")
	ErrInternal        = errors.New("memdb: internal error")
	// ErrQuotaExceeded: the data reached the cluster's quota
	// (--data-quota-bytes). Writes that add data are refused until rows
	// are deleted or the quota is raised; retrying does not help.
	ErrQuotaExceeded = errors.New("memdb: data quota exceeded")
	// ErrOutcomeUnknown: a write's deadline passed while it may or may not
	// have been applied. Retrying it with the same client is safe only in
	// the same call; the client already retried within the deadline.
	ErrOutcomeUnknown = errors.New("memdb: write outcome unknown")
	// ErrCompacted: a watch asked for changes older than the history
	// members keep. Client.Watch handles it by re-listing.
	ErrCompacted = errors.New("memdb: watch start revision compacted")
	// ErrWatchTooSlow: the member cancelled a watch that fell behind.
	// Client.Watch resumes it.
	ErrWatchTooSlow = errors.New("memdb: watch fell behind")
	// ErrWatchEnded: the watched table or index was dropped.
	ErrWatchEnded = errors.New("memdb: watched table or index dropped")
	// ErrResponseTooLarge: the answer would exceed the member's response
	// size limit (--max-response-bytes); ask for fewer rows or keys.
	ErrResponseTooLarge = errors.New("memdb: response too large")
	// ErrOutcomeNotKept: a retried write had been applied (the error's
	// Revision), but its read results were too large for the member to
	// keep for retries; read them again.
	ErrOutcomeNotKept = errors.New("memdb: write applied, its read results were not kept for the retry")
	// ErrFutureRevision: a read's min_revision is beyond what the cluster
	// has committed, so waiting for it could take forever.
	ErrFutureRevision = errors.New("memdb: min_revision is beyond the committed revision")
	// ErrUnauthenticated: access control is on and the call carried no
	// valid credentials (WithCredentials, or a client certificate).
	ErrUnauthenticated = errors.New("memdb: unauthenticated")
	// ErrPermissionDenied: the caller lacks a permission; the error's
	// message names it.
	ErrPermissionDenied = errors.New("memdb: permission denied")
	// ErrUserNotFound, ErrUserExists, ErrRoleNotFound, ErrRoleExists:
	// user and role management.
	ErrUserNotFound = errors.New("memdb: no such user")
	ErrUserExists   = errors.New("memdb: user exists")
	ErrRoleNotFound = errors.New("memdb: no such role")
	ErrRoleExists   = errors.New("memdb: role exists")
)

// reasonErrors mirrors the server's reason table (memdbv1.CodeOf).
var reasonErrors = map[string]error{
	pb.ReasonInvalidArgument:  ErrInvalidArgument,
	pb.ReasonTypeMismatch:     ErrTypeMismatch,
	pb.ReasonTableNotFound:    ErrTableNotFound,
	pb.ReasonTableExists:      ErrTableExists,
	pb.ReasonIndexNotFound:    ErrIndexNotFound,
	pb.ReasonIndexExists:      ErrIndexExists,
	pb.ReasonRowExists:        ErrRowExists,
	pb.ReasonRowNotFound:      ErrNotFound,
	pb.ReasonUniqueViolation:  ErrUniqueViolation,
	pb.ReasonVersionMismatch:  ErrVersionMismatch,
	pb.ReasonTooManyOps:       ErrTooManyOps,
	pb.ReasonTooLarge:         ErrTooLarge,
	pb.ReasonStaleSequence:    ErrOutcomeUnknown,
	pb.ReasonSessionLimit:     ErrSessionLimit,
	pb.ReasonUnsupported:      ErrHalted,
	pb.ReasonHalted:           ErrHalted,
	pb.ReasonNoLeader:         ErrUnavailable,
	pb.ReasonNotLeader:        ErrUnavailable,
	pb.ReasonStale:            ErrStale,
	pb.ReasonOverloaded:       ErrOverloaded,
	pb.ReasonPageExpired:      ErrPageExpired,
	pb.ReasonPrecondition:     ErrPrecondition,
	pb.ReasonCorrupt:          ErrCorrupt,
	pb.ReasonInternal:         ErrInternal,
	pb.ReasonQuotaExceeded:    ErrQuotaExceeded,
	pb.ReasonDiverged:         ErrUnavailable, // retried on another member
	pb.ReasonWatchCompacted:   ErrCompacted,
	pb.ReasonWatchTooSlow:     ErrWatchTooSlow,
	pb.ReasonWatchEnded:       ErrWatchEnded,
	pb.ReasonNotReady:         ErrUnavailable,
	pb.ReasonResponseTooLarge: ErrResponseTooLarge,
	pb.ReasonOutcomeNotKept:   ErrOutcomeNotKept,
	pb.ReasonFutureRevision:   ErrFutureRevision,
	pb.ReasonUnauthenticated:  ErrUnauthenticated,
	pb.ReasonPermissionDenied: ErrPermissionDenied,
	pb.ReasonUserNotFound:     ErrUserNotFound,
	pb.ReasonUserExists:       ErrUserExists,
	pb.ReasonRoleNotFound:     ErrRoleNotFound,
	pb.ReasonRoleExists:       ErrRoleExists,
}

// Error is a failed call: the gRPC code, the server's reason and message.
type Error struct {
	Code    codes.Code
	Reason  string
	Message string
	// LeaderAddr is the leader's address when the server named it.
	LeaderAddr string
	// RetryAfter is the server's suggested pause, if any.
	RetryAfter time.Duration
	// OutcomeUnknown: a write that may or may not have been applied.
	OutcomeUnknown bool
	sentinel       error
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("memdb: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("memdb: %s: %s", e.Code, e.Message)
}

// Unwrap returns the sentinel for errors.Is.
func (e *Error) Unwrap() error { return e.sentinel }

// fromStatus turns a gRPC error into an *Error.
func fromStatus(err error) *Error {
	st, _ := status.FromError(err)
	e := &Error{Code: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.Domain == pb.ErrorDomain {
				e.Reason = d.Reason
				e.LeaderAddr = d.Metadata[pb.MetaLeaderAddr]
				e.OutcomeUnknown = d.Metadata[pb.MetaOutcome] == "unknown"
			}
		case *errdetails.RetryInfo:
			e.RetryAfter = d.RetryDelay.AsDuration()
		}
	}
	if s, ok := reasonErrors[e.Reason]; ok {
		e.sentinel = s
	} else {
		e.sentinel = codeErrors(e.Code)
	}
	if e.OutcomeUnknown || e.Code == codes.DeadlineExceeded {
		e.sentinel = errors.Join(e.sentinel, ErrOutcomeUnknown)
	}
	return e
}

func codeErrors(c codes.Code) error {
	switch c {
	case codes.InvalidArgument, codes.OutOfRange:
		return ErrInvalidArgument
	case codes.NotFound:
		return ErrNotFound
	case codes.AlreadyExists:
		return ErrRowExists
	case codes.FailedPrecondition:
		return ErrVersionMismatch
	case codes.ResourceExhausted:
		return ErrOverloaded
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		return ErrUnavailable
	case codes.DataLoss:
		return ErrCorrupt
	}
	return ErrInternal
}

// retryable reports whether a call that failed this way may be tried
// again. Writes carry a session sequence, so repeating them is safe too.
func (e *Error) retryable() bool {
	switch e.Code {
	case codes.Unavailable, codes.Aborted:
		return e.Reason != pb.ReasonHalted
	case codes.ResourceExhausted:
		return e.Reason == pb.ReasonOverloaded
	case codes.DeadlineExceeded:
		// The server's own deadline may be shorter than ours (a forwarded
		// call); the caller's context decides whether time is left.
		return true
	case codes.FailedPrecondition:
		return false
	}
	return false
}

// GRPCCode returns the call's gRPC status code.
func (e *Error) GRPCCode() codes.Code { return e.Code }

// rejected reports whether the server refused the request as a whole and
// applied nothing: it failed validation or the state machine rejected it
// deterministically.
func (e *Error) rejected() bool {
	if e.OutcomeUnknown {
		return false
	}
	if e.Reason == "" && e.Code == codes.ResourceExhausted {
		return true // gRPC refused a message over the size limit unread
	}
	switch e.Reason {
	case pb.ReasonInvalidArgument, pb.ReasonTypeMismatch, pb.ReasonTableNotFound, pb.ReasonIndexNotFound,
		pb.ReasonRowExists, pb.ReasonRowNotFound, pb.ReasonUniqueViolation, pb.ReasonVersionMismatch,
		pb.ReasonTooManyOps, pb.ReasonTooLarge:
		return true
	}
	return false
}
