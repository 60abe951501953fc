package fsm

import (
	"bytes"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Member is a registered member of the cluster.
type Member struct {
	ID         string
	ClientAddr string
	RaftAddr   string
	Version    string
	// MaxCommandVersion is the highest command format the member applies.
	MaxCommandVersion uint32
}

// membersState is the member registry, replaced (never mutated) on every
// change so that readers on other goroutines can load it atomically.
type membersState struct {
	token   []byte
	members map[string]Member
}

// Members returns the registered members sorted by id. Safe from any
// goroutine.
func (f *FSM) Members() []Member {
	ms := f.members.Load()
	out := make([]Member, 0, len(ms.members))
	for _, m := range ms.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Member returns one registered member. Safe from any goroutine.
func (f *FSM) Member(id string) (Member, bool) {
	m, ok := f.members.Load().members[id]
	return m, ok
}

func (f *FSM) registerMember(r *cmdpb.RegisterMember) error {
	if r == nil || r.NodeId == "" || len(r.NodeId) > 64 || r.ClientAddr == "" || len(r.ClientAddr) > 256 || len(r.RaftAddr) > 256 || len(r.Version) > 64 {
		return fmt.Errorf("%w: member registration needs a node id (1-64 bytes) and a client address", errInvalid)
	}
	cur := f.members.Load()
	next := &membersState{token: cur.token, members: make(map[string]Member, len(cur.members)+1)}
	for k, v := range cur.members {
		next.members[k] = v
	}
	if len(r.ClusterToken) > 0 {
		if len(cur.token) == 0 {
			next.token = bytes.Clone(r.ClusterToken)
		} else if !bytes.Equal(cur.token, r.ClusterToken) {
			return &CommandError{Reason: pb.ReasonInvalidArgument, Message: fmt.Sprintf(
				"node %s bootstrapped with a different --initial-cluster than the cluster it is in; every bootstrapping node must be given the same list", r.NodeId)}
		}
	}
	next.members[r.NodeId] = Member{ID: r.NodeId, ClientAddr: r.ClientAddr, RaftAddr: r.RaftAddr, Version: r.Version, MaxCommandVersion: r.MaxCommandVersion}
	f.members.Store(next)
	return nil
}

func (ms *membersState) encode() ([]byte, error) {
	snap := &cmdpb.SnapshotMembers{ClusterToken: ms.token}
	ids := make([]string, 0, len(ms.members))
	for id := range ms.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := ms.members[id]
		snap.Members = append(snap.Members, &cmdpb.RegisterMember{NodeId: m.ID, ClientAddr: m.ClientAddr, RaftAddr: m.RaftAddr, Version: m.Version, MaxCommandVersion: m.MaxCommandVersion})
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(snap)
}

func decodeMembers(b []byte) (*membersState, error) {
	var snap cmdpb.SnapshotMembers
	if err := proto.Unmarshal(b, &snap); err != nil {
		return nil, err
	}
	ms := &membersState{token: snap.ClusterToken, members: map[string]Member{}}
	for _, m := range snap.Members {
		if m.NodeId == "" {
			return nil, fmt.Errorf("member without id")
		}
		ms.members[m.NodeId] = Member{ID: m.NodeId, ClientAddr: m.ClientAddr, RaftAddr: m.RaftAddr, Version: m.Version, MaxCommandVersion: m.MaxCommandVersion}
	}
	return ms, nil
}

// ResetMembers forgets the member registry and the cluster token. It is
// for seeding a new cluster from a backup, whose registry describes the
// old cluster; it must not be called on a running node.
func (f *FSM) ResetMembers() {
	f.members.Store(&membersState{members: map[string]Member{}})
}
