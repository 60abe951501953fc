package node

import (
	"github.com/hashicorp/raft"

	"github.com/memdbd/memdbd/fsm"
)

// gatedFSM applies a batch only once the leader's own copy of it is on
// disk (see parallelLog). On followers every applied entry is already
// durable and the wait returns at once.
type gatedFSM struct {
	*fsm.FSM
	log *parallelLog
}

func (g gatedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	if len(logs) > 0 {
		if err := g.log.waitDurable(logs[len(logs)-1].Index); err != nil {
			// The log could not be written; parallelLog's onFail stops the
			// node. Applying now could expose an entry that no disk holds.
			panic("raft log write failed, refusing to apply: " + err.Error())
		}
	}
	return g.FSM.ApplyBatch(logs)
}

// commitCapTransport is Raft's TCP transport that never tells a follower
// an entry is committed before it is on the leader's disk (see
// parallelLog): the commit index in each outgoing append is lowered to the
// last durable entry. A follower learns the rest with the next append,
// which the leader sends at least every CommitTimeout.
type commitCapTransport struct {
	*raft.NetworkTransport
	log *parallelLog
}

func (t *commitCapTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	args.LeaderCommitIndex = t.log.durableBound(args.LeaderCommitIndex)
	return t.NetworkTransport.AppendEntries(id, target, args, resp)
}

func (t *commitCapTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &commitCapPipeline{AppendPipeline: p, log: t.log}, nil
}

type commitCapPipeline struct {
	raft.AppendPipeline
	log *parallelLog
}

func (p *commitCapPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	args.LeaderCommitIndex = p.log.durableBound(args.LeaderCommitIndex)
	return p.AppendPipeline.AppendEntries(args, resp)
}
