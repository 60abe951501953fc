// Package chaos is memdbd's Jepsen-style fault-injection harness.
//
// It runs three real memdbd processes on loopback and puts every byte they
// exchange through proxies it controls:
//
//   - Peer (Raft) traffic: node i advertises its Raft address on its own
//     loopback IP 127.0.0.(11+i) where a proxy listens, and dials its peers
//     from that IP (--raft-source-addr). The proxy in front of node j thus
//     knows which node i connects, and applies the rule of each direction
//     (i→j for what i sends, j→i for what j answers): pass, drop or delay.
//   - Client traffic: clients (and peers forwarding to the leader) reach
//     node i through a client proxy, which can lose a reply after the
//     server has handled the request, so that clients retry.
//
// While workloads (a linearizable register, a bank, a set of unique
// inserts, a counter) run through the Go client, nemeses kill, pause,
// partition, delay and restart nodes. Afterwards the checkers judge the
// recorded history: porcupine for linearizability of the register, the
// bank's invariant in every read, every acknowledged insert present and
// none applied twice, the counter within its bounds, and identical state
// hashes on every replica. Snapshots are made frequent (a low threshold),
// so that snapshot creation, transfer and restore happen throughout.
//
// Run it with `make chaos` (or go run ./cmd/memdb-chaos -h); `go test
// ./chaos` runs a short fixed-seed suite.
package chaos
