package node

import (
	"errors"
	"fmt"
)

// Errors returned by the node. The server maps them to gRPC codes.
var (
	// ErrNotLeader: the request needs the leader and this node is not it.
	// Errors wrapping it are *NotLeaderError when a leader is known.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader: no leader is known; an election may be under way.
	ErrNoLeader = errors.New("no leader")
	// ErrNotReady: this node was just elected and has not yet applied an
	// entry of its own term, so it cannot serve linearizable reads.
	ErrNotReady = errors.New("leader not ready")
	// ErrOverloaded: too many writes are pending; retry after a pause.
	ErrOverloaded = errors.New("too many pending writes")
	// ErrOutcomeUnknown: the write was proposed but its outcome could not
	// be learned (leadership lost, deadline passed). It may or may not be
	// applied; a retry with the same session sequence is safe.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrShutdown: the node is shutting down.
	ErrShutdown = errors.New("node shutting down")
	// ErrFeatureLevel: a command newer than every voter applies.
	ErrFeatureLevel = errors.New("cluster feature level too low")
	// ErrLevelUnknown: a voter has not registered yet (a new cluster or a
	// new member), so the command formats every voter applies are not
	// known; it clears within moments.
	ErrLevelUnknown = errors.New("cluster feature level not known yet")
)

// NotLeaderError names the leader a request should go to.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string // client (gRPC) address; empty if not registered yet
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return ErrNoLeader.Error()
	}
	return fmt.Sprintf("not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Is matches ErrNotLeader (or ErrNoLeader when no leader is known).
func (e *NotLeaderError) Is(target error) bool {
	if e.LeaderID == "" {
		return target == ErrNoLeader
	}
	return target == ErrNotLeader
}

// errUnknownMember: a request named a member that is not in the cluster.
var errUnknownMember = errors.New("unknown member")

// ErrUnknownMember is returned for requests naming a non-member.
var ErrUnknownMember = errUnknownMember
