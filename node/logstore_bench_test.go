package node

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

func openBolt(b *testing.B, name string) *raftboltdb.BoltStore {
	b.Helper()
	s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), name),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkCommitPath measures the disk part of one write's commit with
// one follower: the leader's append and the follower's append of the same
// batch of 8 entries (300 bytes each), each a real bbolt commit on this
// machine's disk. serial is hashicorp/raft's own order (the leader writes,
// then sends); parallel is the leader's append through parallelLog, with
// the follower's append running meanwhile, as replication does. The
// ratio of the two is what the parallel append saves per commit.
func BenchmarkCommitPath(b *testing.B) {
	const batch = 8
	data := make([]byte, 300)
	mk := func(i int) []*raft.Log {
		logs := make([]*raft.Log, batch)
		for j := range logs {
			logs[j] = &raft.Log{Index: uint64(i*batch + j + 1), Term: 1, Type: raft.LogCommand, Data: data}
		}
		return logs
	}
	b.Run("serial", func(b *testing.B) {
		leader, follower := openBolt(b, "leader.db"), openBolt(b, "follower.db")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			logs := mk(i)
			if err := leader.StoreLogs(logs); err != nil {
				b.Fatal(err)
			}
			if err := follower.StoreLogs(logs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		follower := openBolt(b, "follower.db")
		leader := newParallelLog(openBolt(b, "leader.db"), func() bool { return true }, func(err error) { b.Error(err) })
		defer leader.Close()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			logs := mk(i)
			if err := leader.StoreLogs(logs); err != nil {
				b.Fatal(err)
			}
			if err := follower.StoreLogs(logs); err != nil {
				b.Fatal(err)
			}
			if err := leader.waitDurable(logs[batch-1].Index); err != nil {
				b.Fatal(err)
			}
		}
	})
}
