// Package node runs one member of a memdbd cluster: hashicorp/raft with a
// raft-boltdb log (fsynced), file snapshots and the TCP transport, driving
// the state machine of package fsm.
//
// It offers the consensus primitives the server builds on, each bounded by
// the caller's context:
//
//   - Apply proposes a command (leader only) and returns its result once a
//     quorum has committed it and this node has applied it. The caller's
//     deadline becomes Raft's enqueue timeout and bounds the wait.
//   - ReadIndex confirms leadership with a quorum (shared among concurrent
//     callers) and returns the index a linearizable read must wait for;
//     WaitApplied waits for it on any node.
//   - Leader, LastContact and Status report what the node knows.
//
// # Readiness of a new leader
//
// A new leader applies a Tick of its own term before it serves
// linearizable reads (Raft §6.4: until then its commit index may lag). From
// that entry on, every index the leader hands out is an entry the state
// machine sees (commands and configuration changes: the node issues no
// Raft barriers), so WaitApplied can wait on the state machine's own
// applied index.
//
// # Snapshots
//
// Every snapshot is checked as it is written, whether this member takes it
// or a leader sends it (snapstore.go): one that no member could read is
// refused before it replaces a readable one, a received snapshot that
// fails to restore is removed, and unfinished snapshots of an earlier run
// are removed at start. A leader whose sends fail keeps retrying with
// hashicorp/raft's backoff (up to about 10 s between tries). At start,
// Raft is offered only snapshots the log continues from (snapcheck.go).
//
// # Goroutines
//
// Open starts two goroutines (leadership watcher, ticker), and shared
// leadership checks (package rounds) run one while reads wait; all are
// tracked and Close waits for them.
package node
