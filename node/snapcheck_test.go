package node

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestUsableSnapshots(t *testing.T) {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	logs := raft.NewInmemStore()
	u := &usableSnapshots{SnapshotStore: snaps, logs: logs}
	list := func() ([]uint64, error) {
		metas, err := u.List()
		var idx []uint64
		for _, m := range metas {
			idx = append(idx, m.Index)
		}
		return idx, err
	}
	setLog := func(first, last uint64) {
		logs = raft.NewInmemStore()
		u.logs = logs
		for i := first; i <= last && first > 0; i++ {
			if err := logs.StoreLog(&raft.Log{Index: i, Term: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var gap *errLogGap

	// No snapshot: fine while the log starts at 1 or is empty, a gap
	// once it was compacted.
	setLog(1, 10)
	if got, err := list(); err != nil || len(got) != 0 {
		t.Fatalf("no snapshot, log from 1: %v, %v", got, err)
	}
	setLog(100, 120)
	if _, err := list(); !errors.As(err, &gap) || !strings.Contains(err.Error(), "no snapshot for the entries before it") {
		t.Fatalf("no snapshot, log from 100: %v", err)
	}

	for _, idx := range []uint64{50, 90, 150} {
		sink, err := snaps.Create(raft.SnapshotVersionMax, idx, 1, raft.Configuration{}, 1, trans)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(sink, "state")
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		first, last uint64
		want        []uint64
	}{
		{0, 0, []uint64{150, 90, 50}},   // empty log
		{1, 200, []uint64{150, 90, 50}}, // the whole log
		{91, 200, []uint64{150, 90}},    // 90 continues into 91; 50 does not
		{100, 200, []uint64{150}},       // only the newest
		{151, 200, []uint64{150}},       // the log starts right after it
	} {
		setLog(tc.first, tc.last)
		got, err := list()
		if err != nil || !equalU64(got, tc.want) {
			t.Errorf("log %d..%d: %v, %v; want %v", tc.first, tc.last, got, err, tc.want)
		}
	}
	setLog(152, 200) // a gap after the newest snapshot
	if _, err := list(); !errors.As(err, &gap) || gap.newest != 150 || !strings.Contains(err.Error(), "after the newest snapshot (index 150)") {
		t.Fatalf("log from 152 after a snapshot at 150: %v", err)
	}
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
