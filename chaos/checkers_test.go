package chaos

// Self-tests of the checkers: each is fed a history with a planted anomaly
// and must flag it with its specific verdict, and a clean history it must
// pass. No cluster runs here: the inputs are built from the package's own
// types, so a checker that stopped looking at something fails here rather
// than passing a faulty run silently.

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// --- register: porcupine with registerModel, over Recorder.history ---

func regWrite(clientID, key int, v int64, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: clientID, Input: regInput{Op: "write", Key: key, Arg: v}, Call: call, Output: regOutput{}, Return: ret}
}

// regWriteUnknown is a write whose outcome the client never learned.
func regWriteUnknown(clientID, key int, v int64, call int64) porcupine.Operation {
	return porcupine.Operation{ClientId: clientID, Input: regInput{Op: "write", Key: key, Arg: v}, Call: call, Output: regOutput{Unknown: true}, Return: -1}
}

func regRead(clientID, key int, v int64, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: clientID, Input: regInput{Op: "read", Key: key}, Call: call, Output: regOutput{Value: v}, Return: ret}
}

func regCAS(clientID, key int, from, to int64, swapped bool, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: clientID, Input: regInput{Op: "cas", Key: key, Arg: from, New: to}, Call: call, Output: regOutput{OK: swapped}, Return: ret}
}

// checkRegister runs the register check as Run does: the recorder's
// history (unknown outcomes returning last) through porcupine.
func checkRegister(t *testing.T, ops ...porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	rec := newRecorder()
	for _, op := range ops {
		rec.addOp(op)
	}
	res, _ := porcupine.CheckOperationsVerbose(registerModel, rec.history(), 10*time.Second)
	return res
}

func TestCheckerRegisterCleanHistory(t *testing.T) {
	res := checkRegister(t,
		// Key 0, sequential: write, read, swap, failed swap.
		regWrite(0, 0, 1, 0, 10),
		regRead(1, 0, 1, 11, 20),
		regCAS(0, 0, 1, 2, true, 21, 30),
		regRead(1, 0, 2, 31, 40),
		regCAS(2, 0, 1, 3, false, 41, 50),
		regRead(1, 0, 2, 51, 60),
		// A read concurrent with a write may see either value.
		regWrite(0, 0, 4, 61, 80),
		regRead(1, 0, 2, 65, 70),
		regRead(2, 0, 4, 81, 90),
		// Key 1: a write of unknown outcome may take effect any time
		// after its call.
		regWrite(0, 1, 7, 0, 5),
		regRead(1, 1, 7, 6, 9),
		regWriteUnknown(3, 1, 9, 10),
		regRead(1, 1, 7, 20, 25),
		regRead(1, 1, 9, 30, 35),
	)
	if res != porcupine.Ok {
		t.Fatalf("clean register history: porcupine says %s, want %s", res, porcupine.Ok)
	}
}

func TestCheckerRegisterPlantedAnomaly(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
	}{
		{"stale read after a newer write completed", []porcupine.Operation{
			regWrite(0, 0, 1, 0, 10),
			regWrite(0, 0, 2, 20, 30),
			regRead(1, 0, 1, 40, 50), // 2 was written before the read began
		}},
		{"read of a value whose unknown write was called later", []porcupine.Operation{
			regWrite(0, 0, 1, 0, 10),
			regRead(1, 0, 5, 20, 30),
			regWriteUnknown(2, 0, 5, 40),
		}},
		{"swap acknowledged on a value the register did not hold", []porcupine.Operation{
			regWrite(0, 0, 1, 0, 10),
			regCAS(1, 0, 3, 4, true, 20, 30),
		}},
		{"stale read on one key of several", []porcupine.Operation{
			regWrite(0, 1, 1, 0, 10),
			regWrite(0, 0, 1, 0, 10),
			regWrite(0, 0, 2, 20, 30),
			regRead(1, 1, 1, 40, 50),
			regRead(1, 0, 1, 40, 50),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := checkRegister(t, tc.ops...); res != porcupine.Illegal {
				t.Fatalf("porcupine says %s, want %s", res, porcupine.Illegal)
			}
		})
	}
}

// --- bank: every audit keeps the total and no balance negative ---

func bankPage(rev uint64, node string, balances ...int64) client.Page {
	p := client.Page{Header: client.Header{Revision: rev, NodeID: node}}
	for i, b := range balances {
		p.Rows = append(p.Rows, client.Row{Fields: client.Fields{"id": client.Int(int64(i)), "balance": client.Int(b)}})
	}
	return p
}

func TestCheckerBankCleanTransfers(t *testing.T) {
	w := &bankWorkload{accounts: 5, total: 500, table: "bank"}
	w.auditPage("read", bankPage(3, "n1", 100, 100, 100, 100, 100))
	w.auditPage("read", bankPage(7, "n2", 93, 107, 100, 100, 100))      // 0 -> 1: 7
	w.auditPage("read", bankPage(9, "n3", 93, 107, 90, 110, 100))       // 2 -> 3: 10
	w.auditPage("final read", bankPage(12, "n1", 0, 200, 90, 110, 100)) // 0 -> 1: 93
	v := w.verdict(nil)
	want := Verdict{Checker: "bank", OK: true, Detail: "4 reads, total always 500, no negative balance"}
	if v != want {
		t.Fatalf("balanced transfers: got %+v, want %+v", v, want)
	}
}

func TestCheckerBankPlantedAnomaly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		page  client.Page
		final error
		want  string
	}{
		{"total off by one", bankPage(8, "n2", 93, 107, 100, 100, 101), nil,
			"read at revision 8 on n2: 5 accounts, total 501, negative false"},
		{"total one short", bankPage(8, "n2", 93, 106, 100, 100, 100), nil,
			"read at revision 8 on n2: 5 accounts, total 499, negative false"},
		{"negative balance with the total kept", bankPage(8, "n3", -1, 201, 100, 100, 100), nil,
			"read at revision 8 on n3: 5 accounts, total 500, negative true"},
		{"an account missing", bankPage(8, "n1", 100, 100, 100, 200), nil,
			"read at revision 8 on n1: 4 accounts, total 500, negative false"},
		{"final read failed", bankPage(8, "n1", 100, 100, 100, 100, 100), errors.New("unavailable"),
			"final read failed: unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &bankWorkload{accounts: 5, total: 500, table: "bank"}
			w.auditPage("read", bankPage(3, "n1", 100, 100, 100, 100, 100))
			w.auditPage("read", tc.page)
			w.auditPage("read", bankPage(9, "n1", 100, 100, 100, 100, 100))
			v := w.verdict(tc.final)
			if v.OK || v.Checker != "bank" || v.Detail != tc.want {
				t.Fatalf("got %+v, want a failed bank verdict %q", v, tc.want)
			}
		})
	}
}

// --- set: every acknowledged insert present, none applied twice ---

func setRow(k string, version uint64) client.Row {
	return client.Row{Fields: client.Fields{"k": client.String(k)}, Meta: client.Meta{CreateRevision: 5, ModRevision: 5, Version: version}}
}

// scanOf is a final scan yielding rows, then err if not nil.
func scanOf(rows []client.Row, err error) iter.Seq2[client.Row, error] {
	return func(yield func(client.Row, error) bool) {
		for _, r := range rows {
			if !yield(r, nil) {
				return
			}
		}
		if err != nil {
			yield(client.Row{}, err)
		}
	}
}

// newSetHistory is a set workload that had three inserts acknowledged and
// one of unknown outcome.
func newSetHistory() *setWorkload {
	w := newSetWorkload(2, "set")
	w.acked = map[string]uint64{"w0-000001": 5, "w1-000001": 6, "w0-000002": 7}
	w.unknown = map[string]bool{"w1-000002": true}
	return w
}

func TestCheckerSetClean(t *testing.T) {
	w := newSetHistory()
	v := w.check(scanOf([]client.Row{setRow("w0-000001", 1), setRow("w0-000002", 1), setRow("w1-000001", 1), setRow("w1-000002", 1)}, nil))
	want := Verdict{Checker: "set", OK: true, Detail: "3 acknowledged inserts all present once; 1 of 1 unknown ones applied"}
	if v != want {
		t.Fatalf("clean set: got %+v, want %+v", v, want)
	}
	// The unknown insert may as well never have been applied.
	v = newSetHistory().check(scanOf([]client.Row{setRow("w0-000001", 1), setRow("w0-000002", 1), setRow("w1-000001", 1)}, nil))
	if !v.OK || v.Detail != "3 acknowledged inserts all present once; 0 of 1 unknown ones applied" {
		t.Fatalf("clean set without the unknown insert: got %+v", v)
	}
}

func TestCheckerSetPlantedAnomaly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rows  []client.Row
		err   error
		dupes []string
		want  string
	}{
		{"acknowledged insert lost", []client.Row{setRow("w0-000001", 1), setRow("w1-000001", 1), setRow("w1-000002", 1)}, nil, nil,
			"1 acknowledged inserts lost ([w0-000002]), 0 answered AlreadyExists on a retry ([])"},
		{"insert applied twice (version 2)", []client.Row{setRow("w0-000001", 1), setRow("w0-000002", 2), setRow("w1-000001", 1)}, nil, nil,
			"row w0-000002 has version 2: applied more than once"},
		{"retry answered AlreadyExists", []client.Row{setRow("w0-000001", 1), setRow("w0-000002", 1), setRow("w1-000001", 1), setRow("w1-000003", 1)}, nil, []string{"w1-000003"},
			"0 acknowledged inserts lost ([]), 1 answered AlreadyExists on a retry ([w1-000003])"},
		{"final scan failed", []client.Row{setRow("w0-000001", 1)}, errors.New("unavailable"), nil,
			"final scan failed: unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSetHistory()
			w.dupes = tc.dupes
			v := w.check(scanOf(tc.rows, tc.err))
			if v.OK || v.Checker != "set" || v.Detail != tc.want {
				t.Fatalf("got %+v, want a failed set verdict %q", v, tc.want)
			}
		})
	}
}

// --- counter: the final value within acknowledged..acknowledged+unknown ---

func counterRow(n int64, version uint64) client.Row {
	return client.Row{Fields: client.Fields{"k": client.String("c"), "n": client.Int(n)}, Meta: client.Meta{Version: version}}
}

func newCounterHistory(acked, unknown int64) *counterWorkload {
	w := &counterWorkload{table: "counter"}
	w.acked.Store(acked)
	w.unknown.Store(unknown)
	return w
}

func TestCheckerCounterClean(t *testing.T) {
	for _, n := range []int64{10, 11, 12} { // 10 acknowledged, 2 unknown
		v := newCounterHistory(10, 2).verdict(counterRow(n, uint64(n)+1))
		want := Verdict{Checker: "counter", OK: true, Detail: fmt.Sprintf("counter %d (version %d); 10 acknowledged increments, 2 unknown: want 10..12", n, n+1)}
		if v != want {
			t.Fatalf("counter %d: got %+v, want %+v", n, v, want)
		}
	}
}

func TestCheckerCounterPlantedAnomaly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int64
		version uint64
	}{
		{"an acknowledged increment lost", 9, 10},
		{"more increments than acknowledged and unknown ones", 13, 14},
		{"a write that was not an increment (version off)", 11, 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newCounterHistory(10, 2).verdict(counterRow(tc.n, tc.version))
			want := Verdict{Checker: "counter", OK: false, Detail: fmt.Sprintf("counter %d (version %d); 10 acknowledged increments, 2 unknown: want 10..12", tc.n, tc.version)}
			if v != want {
				t.Fatalf("got %+v, want %+v", v, want)
			}
		})
	}
}

// --- watch: order, uniqueness, and the view equal to the table ---

func watchPut(k string, rev uint64) client.WatchEvent {
	return client.WatchEvent{Type: client.EventPut, Revision: rev,
		Row: client.Row{Fields: client.Fields{"k": client.String(k)}, Meta: client.Meta{CreateRevision: rev, ModRevision: rev, Version: 1}}}
}

// consumeAll runs a watch record over the planted stream, as the watches
// of a run do, and returns it once the stream has ended.
func consumeAll(resps ...client.WatchResponse) *watchRecord {
	r := &watchRecord{view: map[string]uint64{}}
	ch := make(chan client.WatchResponse, len(resps))
	for _, resp := range resps {
		ch <- resp
	}
	close(ch)
	r.consume(context.Background(), ch)
	return r
}

func judgeWatch(r *watchRecord, rows, acked map[string]uint64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.judge(0, rows, acked)
}

// The table at the end (key -> create revision) and the inserts the set
// workload had acknowledged (key -> revision).
var (
	watchTable = map[string]uint64{"a": 3, "b": 5, "c": 6, "d": 9}
	watchAcked = map[string]uint64{"b": 5, "c": 6, "d": 9}
)

func watchSnapshot() client.WatchResponse {
	return client.WatchResponse{Reset: true, Revision: 4, Rows: []client.Row{watchPut("a", 3).Row}}
}

func TestCheckerWatchCleanStream(t *testing.T) {
	r := consumeAll(
		watchSnapshot(),
		client.WatchResponse{Events: []client.WatchEvent{watchPut("b", 5), watchPut("c", 6)}, Revision: 6},
		client.WatchResponse{Progress: true, Revision: 8},
		client.WatchResponse{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
	)
	if got := judgeWatch(r, watchTable, watchAcked); got != "" {
		t.Fatalf("clean stream flagged: %s", got)
	}
	if r.events != 3 || r.resets != 1 || r.rev != 9 {
		t.Fatalf("clean stream: %d events, %d resets, at revision %d; want 3, 1, 9", r.events, r.resets, r.rev)
	}
	// A re-list after a gap the members could not fill replaces the view:
	// also clean.
	r = consumeAll(
		watchSnapshot(),
		client.WatchResponse{Events: []client.WatchEvent{watchPut("b", 5)}, Revision: 5},
		client.WatchResponse{Reset: true, Revision: 9, Rows: []client.Row{watchPut("a", 3).Row, watchPut("b", 5).Row, watchPut("c", 6).Row, watchPut("d", 9).Row}},
	)
	if got := judgeWatch(r, watchTable, watchAcked); got != "" {
		t.Fatalf("clean stream with a re-list flagged: %s", got)
	}
}

func TestCheckerWatchPlantedAnomaly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		resps []client.WatchResponse
		want  string
	}{
		{"gap: the event of revision 6 missing", []client.WatchResponse{
			watchSnapshot(),
			{Events: []client.WatchEvent{watchPut("b", 5)}, Revision: 5},
			{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
		}, "watch 0: 1 rows never delivered [c], 0 delivered but not committed [], 0 at the wrong revision []"},
		{"out of order: revision 5 after revision 6", []client.WatchResponse{
			watchSnapshot(),
			{Events: []client.WatchEvent{watchPut("c", 6)}, Revision: 6},
			{Events: []client.WatchEvent{watchPut("b", 5)}, Revision: 6},
			{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
		}, "watch 0: 1 order or uniqueness violations: [b at revision 5 after revision 6]"},
		{"duplicate: the event of revision 5 delivered again", []client.WatchResponse{
			watchSnapshot(),
			{Events: []client.WatchEvent{watchPut("b", 5)}, Revision: 5},
			{Events: []client.WatchEvent{watchPut("b", 5), watchPut("c", 6)}, Revision: 6},
			{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
		}, "watch 0: 1 order or uniqueness violations: [b delivered twice (revisions 5 and 5)]"},
		{"delete in an insert-only table", []client.WatchResponse{
			watchSnapshot(),
			{Events: []client.WatchEvent{watchPut("b", 5), watchPut("c", 6)}, Revision: 6},
			{Events: []client.WatchEvent{{Type: client.EventDelete, Revision: 7, Row: client.Row{Fields: client.Fields{"k": client.String("a")}}}}, Revision: 7},
			{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
		}, "watch 0: 1 order or uniqueness violations: [delete of a at 7 in an insert-only table]"},
		{"insert delivered at another revision than committed", []client.WatchResponse{
			watchSnapshot(),
			{Events: []client.WatchEvent{watchPut("b", 5), watchPut("c", 7)}, Revision: 7},
			{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
		}, "watch 0: 0 rows never delivered [], 0 delivered but not committed [], 2 at the wrong revision [c at 7, committed at 6 c at 7, acknowledged at 6]"},
		{"row delivered that the table does not hold", []client.WatchResponse{
			watchSnapshot(),
			{Events: []client.WatchEvent{watchPut("b", 5), watchPut("c", 6), watchPut("x", 7)}, Revision: 7},
			{Events: []client.WatchEvent{watchPut("d", 9)}, Revision: 9},
		}, "watch 0: 0 rows never delivered [], 1 delivered but not committed [x], 0 at the wrong revision []"},
		{"watch ended with an error", []client.WatchResponse{
			watchSnapshot(),
			{Err: errors.New("table dropped")},
		}, "watch 0 ended: table dropped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := judgeWatch(consumeAll(tc.resps...), watchTable, watchAcked); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// --- ttl: reads around a row's expiry ---

func TestCheckerTTLCleanReads(t *testing.T) {
	w := newTTLWorkload(1, "ttl")
	expires := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	k := ttlKey{k: "w0-000001", expires: expires, certain: true}
	at := func(d time.Duration) time.Time { return expires.Add(d) }
	for _, r := range []struct {
		t0, t1 time.Duration
		err    error
	}{
		{-100 * time.Millisecond, -90 * time.Millisecond, nil},                       // found well before expiry
		{-5 * time.Millisecond, 5 * time.Millisecond, nil},                           // straddling the expiry: either
		{-5 * time.Millisecond, 5 * time.Millisecond, client.ErrNotFound},            //
		{10 * time.Millisecond, 15 * time.Millisecond, nil},                          // found just after, within the margin
		{-15 * time.Millisecond, -10 * time.Millisecond, client.ErrNotFound},         // gone just before, within the margin
		{50 * time.Millisecond, 60 * time.Millisecond, client.ErrNotFound},           // gone after expiry
		{-100 * time.Millisecond, -90 * time.Millisecond, errors.New("unavailable")}, // a failed read observed nothing
	} {
		w.judgeRead(k, at(r.t0), at(r.t1), r.err)
	}
	if len(w.violations) != 0 {
		t.Fatalf("clean reads flagged: %v", w.violations)
	}
}

func TestCheckerTTLPlantedAnomaly(t *testing.T) {
	expires := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	k := ttlKey{k: "w0-000001", expires: expires, certain: true}
	for _, tc := range []struct {
		name   string
		t0, t1 time.Time
		err    error
		want   string
	}{
		{"row read after its expiry", expires.Add(50 * time.Millisecond), expires.Add(60 * time.Millisecond), nil,
			fmt.Sprintf("read of w0-000001 started at %v returned the row, past its expiry %v", expires.Add(50*time.Millisecond), expires)},
		{"row missing before its expiry", expires.Add(-100 * time.Millisecond), expires.Add(-90 * time.Millisecond), client.ErrNotFound,
			fmt.Sprintf("read of w0-000001 ended at %v without the row, before its expiry %v", expires.Add(-90*time.Millisecond), expires)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTTLWorkload(1, "ttl")
			w.judgeRead(k, tc.t0, tc.t1, tc.err)
			if len(w.violations) != 1 {
				t.Fatalf("%d violations recorded, want 1: %v", len(w.violations), w.violations)
			}
			// With violations recorded, Check answers from them alone,
			// before it would ask the cluster for the stored rows.
			v := w.Check(context.Background(), nil, nil)
			want := Verdict{Checker: "ttl", Detail: fmt.Sprintf("1 violations: [%s]", tc.want)}
			if v != want {
				t.Fatalf("got %+v, want %+v", v, want)
			}
		})
	}
}

// --- convergence: every replica at one revision with one state hash ---

type fakeMember struct {
	rev        uint64
	hash       uint64
	divergence string
}

func convergedOver(ctx context.Context, members func(call int) []fakeMember) (uint64, uint64, error) {
	call := 0
	var now []fakeMember
	return converged(ctx, 3, func(i int) string { return fmt.Sprintf("n%d", i+1) },
		func(_ context.Context, i int) (*pb.StatusResponse, error) {
			if i == 0 {
				now = members(call)
				call++
			}
			m := now[i]
			return &pb.StatusResponse{Header: &pb.ResponseHeader{Revision: m.rev}, StateHash: m.hash, Divergence: m.divergence}, nil
		})
}

func TestCheckerConvergenceClean(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One replica lags for two rounds, then catches up.
	rev, hash, err := convergedOver(ctx, func(call int) []fakeMember {
		if call < 2 {
			return []fakeMember{{42, 0xab, ""}, {42, 0xab, ""}, {40, 0xcd, ""}}
		}
		return []fakeMember{{42, 0xab, ""}, {42, 0xab, ""}, {42, 0xab, ""}}
	})
	if err != nil || rev != 42 || hash != 0xab {
		t.Fatalf("converged replicas: revision %d, hash %x, err %v; want 42, ab, nil", rev, hash, err)
	}
}

func TestCheckerConvergencePlantedAnomaly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []fakeMember
		want    string
	}{
		{"diverged state hashes at one revision", []fakeMember{{42, 0xaa, ""}, {42, 0xaa, ""}, {42, 0xab, ""}},
			"replicas at revision 42 have different state hashes [aa aa ab]"},
		{"a replica reporting divergence", []fakeMember{{42, 0xaa, ""}, {42, 0xaa, "row t/1 differs"}, {42, 0xaa, ""}},
			"n2 reports its state diverged: row t/1 differs"},
		{"a replica that never catches up", []fakeMember{{42, 0xaa, ""}, {42, 0xaa, ""}, {41, 0xaa, ""}},
			"replicas did not converge: revisions [42 42 41]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, _, err := convergedOver(ctx, func(int) []fakeMember { return tc.members })
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got error %v, want %q", err, tc.want)
			}
		})
	}
}
