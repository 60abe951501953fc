package node

// CommitIndex returns the highest log index this node knows to be
// committed: on the leader its own commit index, on a follower the
// leader's commit index as last heard (capped by the follower's own log).
// Every index at or below it is committed for good: Raft never takes a
// committed entry back, so a caller may wait for this node to apply it.
// It may lag the cluster: a follower learns of a commit with the leader's
// next message, and a new leader learns of its predecessor's commits once
// it has committed an entry of its own term (ReadIndex waits for that).
//
// Unlike Status it only reads an atomic, so it is cheap enough for every
// request.
func (n *Node) CommitIndex() uint64 { return n.raft.CommitIndex() }
