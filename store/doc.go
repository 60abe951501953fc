// Package store is memdbd's in-memory table engine.
//
// It holds typed tables with a primary key and secondary indexes, and it
// knows nothing of Raft or gRPC: the replicated state machine (package fsm)
// feeds it commands in log order, and servers read from it.
//
// # Concurrency contract
//
// One writer, many lock-free readers. All mutation goes through a Batch
// obtained from Store.Begin; only one Batch may be open at a time (Begin
// blocks until the previous one is committed or aborted). Readers call
// Store.View, which returns the last committed, immutable View with one
// atomic load; a View costs O(1) to take, never changes, and never shows a
// half-applied batch or transaction. A long scan or a snapshot that holds a
// View therefore never blocks the writer, and the writer never blocks it.
//
// This is built on copy-on-write B-trees (github.com/tidwall/btree): when a
// batch commits, every table it touched is published as O(1) shadow copies
// of its trees; the writer's next change to a shared node copies that node
// first. Publishing once per batch rather than once per row amortises the
// path copies over every row of the batch.
//
// # Rows in memory
//
// A row is held as one immutable string: the order-preserving encoding of
// its primary key followed by its revisions and its other fields (see
// encoding.go). One allocation per row, and B-tree items of 16 bytes, keep
// the memory overhead near 1.2x the raw data size, and the same bytes are
// what snapshots write and restore.
//
// # Negative zero
//
// A double -0.0 is stored as 0.0, in keys and in row values alike (Double),
// and reads back as 0. In index entries and range bounds this is inherent
// to the ordered key encoding: -0.0 and 0.0 are equal and must be one key. In row
// values it is kept for replication: see Double for why, and for what
// keeping the sign would take.
//
// # Revisions
//
// The caller supplies a revision (the Raft index) with every command. A row
// records the revision that created it and the one that last changed it,
// and counts its versions. A View reports the revision it reflects.
package store
