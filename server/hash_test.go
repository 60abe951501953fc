package server_test

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Callers asking for the state hash in a loop no longer cost a pass over
// every row each: at one revision the member hashes once, and every
// caller gets that hash, the same as a pass would give.
func TestStateHashCallsShareOnePass(t *testing.T) {
	const rows, perTxn = 120_000, 1000
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) { c.Limits.MaxOps = perTxn }})
	cc := dial(t, cl.Members[0].Addr)
	createKV(t, cc, "kv")
	data := pb.NewDataServiceClient(cc)
	for i := 0; i < rows; i += perTxn {
		ops := make([]*pb.Op, perTxn)
		for j := range ops {
			ops[j] = &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprintf("row-%08d", i+j))}}}}
		}
		if _, err := data.Txn(ctxT(t, 10*time.Second), &pb.TxnRequest{Then: ops}); err != nil {
			t.Fatal(err)
		}
	}
	view := cl.Members[0].Node.FSM().Store().View()
	// The CPU of one pass: the least of three, the others may have had
	// the garbage collector's share.
	var want uint64
	pass := time.Duration(1 << 62)
	for i := 0; i < 3; i++ {
		start := cpuTime(t)
		want = view.Hash()
		pass = min(pass, cpuTime(t)-start)
	}
	const callers, calls = 8, 40
	status := pb.NewClusterServiceClient(cc)
	var wg sync.WaitGroup
	start := cpuTime(t)
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				st, err := status.Status(ctxT(t, 5*time.Second), &pb.StatusRequest{IncludeStateHash: true})
				if err != nil || st.Header.Revision != view.Revision() || st.StateHash != want {
					t.Errorf("status: %v, revision %d hash %016x, want %d %016x", err, st.GetHeader().GetRevision(), st.GetStateHash(), view.Revision(), want)
					return
				}
			}
		}()
	}
	wg.Wait()
	used := cpuTime(t) - start
	t.Logf("one pass over %d rows: %v of CPU; %d calls with the hash: %v", rows, pass, callers*calls, used)
	// A pass per call would be callers*calls passes; the calls themselves
	// (client and server in this process) cost a small fraction of that.
	if limit := pass * callers * calls / 3; used > limit {
		t.Fatalf("%d calls with the hash took %v of CPU, more than a third of a pass each (%v)", callers*calls, used, limit)
	}
}
