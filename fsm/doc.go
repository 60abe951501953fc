// Package fsm is memdbd's replicated state machine: a thin
// raft.BatchingFSM over the store.
//
// # Log entries
//
// Every entry is a commandv1.Envelope (protobuf): a format version, the
// proposing leader's clock, an optional write session, and one command. The
// state machine decodes it, hands the command to the store, and returns a
// *commandv1.Result. Whatever the bytes, Apply never panics: an entry that
// does not decode or fails validation yields an error result and changes
// nothing, identically on every replica. An entry whose version is newer
// than this binary understands halts the state machine instead (Halted):
// guessing would let replicas diverge, so the node stops applying, refuses
// to snapshot, and waits to be upgraded; it then replays the entry from the
// log.
//
// # Exactly-once
//
// A write that carries a session (client id, sequence number) is applied
// at most once: the state machine keeps each client's results until the
// client reports it has seen them (first_incomplete_seq), and returns the
// remembered result for a retried sequence number. The session table is
// replicated state: it travels in snapshots and expires idle clients by log
// time, the maximum of the leaders' clocks carried in the entries, so every
// replica forgets the same clients at the same index. When the table is
// full (MaxSessions), a new client evicts the least recently seen one
// (command format 3; before it, the write is refused with SESSION_LIMIT).
//
// What a session remembers is bounded by constants, the same on every
// replica: a result above 64 KiB, or one that would take the session's
// kept results beyond 4 MiB or every session's beyond 256 MiB, is kept
// without the rows its Gets read
// (Result.replay_trimmed). Its caller gets the whole result; a retry gets
// OUTCOME_NOT_KEPT with the revision the write was applied at
// (ResultError).
//
// # Snapshots
//
// Snapshot captures the store's current View in O(1) and encodes the
// (small) session table; Persist streams tables and rows to the sink while
// writes go on. Restore verifies the checksum before it replaces anything.
// The writer refuses to write a record the reader would refuse, so a
// snapshot that could not be read back fails instead of being kept.
// See snapshot.go for the format.
//
// # Goroutines
//
// hashicorp/raft calls ApplyBatch, Apply, Snapshot and Restore from its one
// FSM goroutine; Persist runs on another, concurrently with ApplyBatch.
// Readers use Store().View(), Applied and WaitApplied from any goroutine.
package fsm
