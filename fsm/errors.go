package fsm

import (
	"errors"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Errors of the state machine itself.
var (
	// ErrHalted: an entry of an unknown format version stopped the state
	// machine.
	ErrHalted = errors.New("state machine halted")
	// ErrSnapshotCorrupt: a snapshot failed its checksum or framing checks.
	ErrSnapshotCorrupt = errors.New("snapshot corrupt")
	// ErrSnapshotVersion: a snapshot is of a format this node does not know.
	ErrSnapshotVersion = errors.New("snapshot format not supported")
)

// reasonTable is the one place where store errors get their wire reason.
// Results cached for retried writes carry the reason, so a retry answers
// with the same code as the first attempt.
var reasonTable = []struct {
	err    error
	reason string
}{
	{store.ErrTypeMismatch, pb.ReasonTypeMismatch},
	{store.ErrTableNotFound, pb.ReasonTableNotFound},
	{store.ErrTableExists, pb.ReasonTableExists},
	{store.ErrIndexNotFound, pb.ReasonIndexNotFound},
	{store.ErrIndexExists, pb.ReasonIndexExists},
	{store.ErrRowExists, pb.ReasonRowExists},
	{store.ErrRowNotFound, pb.ReasonRowNotFound},
	{store.ErrUniqueViolation, pb.ReasonUniqueViolation},
	{store.ErrVersionMismatch, pb.ReasonVersionMismatch},
	{store.ErrTooManyOps, pb.ReasonTooManyOps},
	{store.ErrTooLarge, pb.ReasonTooLarge},
	{store.ErrCorrupt, pb.ReasonCorrupt},
	{store.ErrInvalidArgument, pb.ReasonInvalidArgument},
	{ErrHalted, pb.ReasonHalted},
}

// Reason returns the wire reason of an error from the store or the state
// machine; ReasonInternal for anything else.
func Reason(err error) string {
	for _, r := range reasonTable {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return pb.ReasonInternal
}
