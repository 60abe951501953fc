package memdbv1

// This file is hand-written: the error vocabulary shared by the server and
// the client SDK. A failed call carries a google.rpc.ErrorInfo detail whose
// Domain is ErrorDomain and whose Reason is one of the constants below; the
// gRPC code is fixed by the reason (CodeOf), so a client can branch on the
// reason and a person on the code.

import "google.golang.org/grpc/codes"

// ErrorDomain is the ErrorInfo domain of memdbd errors.
const ErrorDomain = "memdb.v1"

// ErrorInfo metadata keys.
const (
	// MetaLeaderID and MetaLeaderAddr name the leader in NOT_LEADER errors.
	MetaLeaderID   = "leader_id"
	MetaLeaderAddr = "leader_addr"
	// MetaOutcome is "unknown" when a write may or may not have been
	// applied (retrying it with the same session sequence is safe).
	MetaOutcome = "outcome"
	// MetaOldestRevision, in WATCH_COMPACTED errors, is the oldest revision
	// a watch can start from.
	MetaOldestRevision = "oldest_revision"
	// MetaRevision, in WATCH_TOO_SLOW and WATCH_ENDED errors, is the
	// revision the stream delivered completely: resume from it. In
	// FUTURE_REVISION errors it is the revision the member has reached; in
	// OUTCOME_NOT_KEPT errors, the revision the write was applied at.
	MetaRevision = "revision"
	// MetaLimit names the setting (its command-line flag) behind a refusal
	// by a limit: OVERLOADED, SESSION_LIMIT, RESPONSE_TOO_LARGE.
	MetaLimit = "limit"
	// MetaPermission, in PERMISSION_DENIED errors, is the permission the
	// caller lacks, as `memdbd role grant` takes it: an action, and for
	// table actions the table ("read:users").
	MetaPermission = "permission"
)

// Error reasons.
const (
	ReasonInvalidArgument  = "INVALID_ARGUMENT"   // malformed request
	ReasonTypeMismatch     = "TYPE_MISMATCH"      // value of the wrong type for a declared field
	ReasonTableNotFound    = "TABLE_NOT_FOUND"    // no such table
	ReasonTableExists      = "TABLE_EXISTS"       // table name taken
	ReasonIndexNotFound    = "INDEX_NOT_FOUND"    // no such index
	ReasonIndexExists      = "INDEX_EXISTS"       // index name taken
	ReasonRowExists        = "ROW_EXISTS"         // insert of a present key
	ReasonRowNotFound      = "ROW_NOT_FOUND"      // update of an absent key
	ReasonUniqueViolation  = "UNIQUE_VIOLATION"   // unique index would hold a duplicate
	ReasonVersionMismatch  = "VERSION_MISMATCH"   // compare-and-set failed
	ReasonTooManyOps       = "TOO_MANY_OPS"       // transaction over the op limit
	ReasonTooLarge         = "TOO_LARGE"          // key, value, row or request over a size limit
	ReasonStaleSequence    = "STALE_SEQUENCE"     // write session sequence already acknowledged
	ReasonSessionLimit     = "SESSION_LIMIT"      // too many sessions or outstanding writes
	ReasonUnsupported      = "UNSUPPORTED"        // command format newer than this node understands
	ReasonHalted           = "HALTED"             // state machine stopped after an unknown command
	ReasonNoLeader         = "NO_LEADER"          // no leader known; retry later
	ReasonNotLeader        = "NOT_LEADER"         // this node cannot serve it; see the leader hint
	ReasonStale            = "STALE"              // a stale read bound cannot be met
	ReasonOverloaded       = "OVERLOADED"         // refused to protect latency; retry after a pause
	ReasonPageExpired      = "PAGE_EXPIRED"       // page token no longer valid; restart the scan
	ReasonPrecondition     = "PRECONDITION"       // an admin change the cluster's state does not allow now
	ReasonCorrupt          = "CORRUPT"            // stored data failed an integrity check
	ReasonInternal         = "INTERNAL"           // a bug; please report it
	ReasonWatchCompacted   = "WATCH_COMPACTED"    // watch start older than the retained history; re-list
	ReasonWatchTooSlow     = "WATCH_TOO_SLOW"     // watcher fell too far behind; resume from its revision
	ReasonWatchEnded       = "WATCH_ENDED"        // the watched table or index was dropped
	ReasonNotReady         = "NOT_READY"          // the cluster cannot take this yet (a member still registering); retry shortly
	ReasonQuotaExceeded    = "QUOTA_EXCEEDED"     // the data reached the member's quota; delete rows or raise the quota
	ReasonDiverged         = "DIVERGED"           // this member's state differs from the other members'; use another member
	ReasonResponseTooLarge = "RESPONSE_TOO_LARGE" // the answer would exceed the response size limit; ask for less
	ReasonOutcomeNotKept   = "OUTCOME_NOT_KEPT"   // a retried write was applied, but its read results were too large to keep for retries
	ReasonFutureRevision   = "FUTURE_REVISION"    // min_revision is beyond what the cluster has committed
	ReasonUnauthenticated  = "UNAUTHENTICATED"    // no valid credentials, and access control is on
	ReasonPermissionDenied = "PERMISSION_DENIED"  // the caller lacks the permission named in the metadata
	ReasonUserNotFound     = "USER_NOT_FOUND"     // no such user
	ReasonUserExists       = "USER_EXISTS"        // user name taken
	ReasonRoleNotFound     = "ROLE_NOT_FOUND"     // no such role
	ReasonRoleExists       = "ROLE_EXISTS"        // role name taken
)

var reasonCodes = map[string]codes.Code{
	ReasonInvalidArgument:  codes.InvalidArgument,
	ReasonTypeMismatch:     codes.InvalidArgument,
	ReasonTableNotFound:    codes.NotFound,
	ReasonTableExists:      codes.AlreadyExists,
	ReasonIndexNotFound:    codes.NotFound,
	ReasonIndexExists:      codes.AlreadyExists,
	ReasonRowExists:        codes.AlreadyExists,
	ReasonRowNotFound:      codes.NotFound,
	ReasonUniqueViolation:  codes.AlreadyExists,
	ReasonVersionMismatch:  codes.FailedPrecondition,
	ReasonTooManyOps:       codes.InvalidArgument,
	ReasonTooLarge:         codes.InvalidArgument,
	ReasonStaleSequence:    codes.FailedPrecondition,
	ReasonSessionLimit:     codes.ResourceExhausted,
	ReasonUnsupported:      codes.FailedPrecondition,
	ReasonHalted:           codes.Unavailable,
	ReasonNoLeader:         codes.Unavailable,
	ReasonNotLeader:        codes.Unavailable,
	ReasonStale:            codes.Unavailable,
	ReasonOverloaded:       codes.ResourceExhausted,
	ReasonPageExpired:      codes.FailedPrecondition,
	ReasonPrecondition:     codes.FailedPrecondition,
	ReasonCorrupt:          codes.DataLoss,
	ReasonInternal:         codes.Internal,
	ReasonWatchCompacted:   codes.OutOfRange,
	ReasonWatchTooSlow:     codes.ResourceExhausted,
	ReasonWatchEnded:       codes.FailedPrecondition,
	ReasonNotReady:         codes.Unavailable,
	ReasonQuotaExceeded:    codes.ResourceExhausted,
	ReasonDiverged:         codes.Unavailable,
	ReasonResponseTooLarge: codes.ResourceExhausted,
	ReasonOutcomeNotKept:   codes.FailedPrecondition,
	ReasonFutureRevision:   codes.OutOfRange,
	ReasonUnauthenticated:  codes.Unauthenticated,
	ReasonPermissionDenied: codes.PermissionDenied,
	ReasonUserNotFound:     codes.NotFound,
	ReasonUserExists:       codes.AlreadyExists,
	ReasonRoleNotFound:     codes.NotFound,
	ReasonRoleExists:       codes.AlreadyExists,
}

// CodeOf returns the gRPC code of a reason; Unknown for an unknown reason.
func CodeOf(reason string) codes.Code {
	if c, ok := reasonCodes[reason]; ok {
		return c
	}
	return codes.Unknown
}

// Reasons lists every reason, for tests that check both ends agree.
func Reasons() []string {
	out := make([]string, 0, len(reasonCodes))
	for r := range reasonCodes {
		out = append(out, r)
	}
	return out
}
