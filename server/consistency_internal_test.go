package server

import (
	"log/slog"
	"strings"
	"testing"
)

// judge's verdicts: outvoted members mark themselves divergent, members in
// the majority do not, and without a majority every member that differs
// does; a revision judged once is not judged again.
func TestJudge(t *testing.T) {
	verdict := func(self string, members ...peerCheckpoints) string {
		s := &Server{metrics: newMetrics(nil), log: slog.New(slog.DiscardHandler)}
		all := []peerCheckpoints{{id: "self", hashes: map[uint64]uint64{9: map[string]uint64{"a": 1, "b": 2, "c": 3}[self]}}}
		s.judge(9, append(all, members...))
		return s.Divergence()
	}
	at := func(id string, h uint64) peerCheckpoints {
		return peerCheckpoints{id: id, hashes: map[uint64]uint64{9: h}}
	}
	none := peerCheckpoints{id: "late", hashes: map[uint64]uint64{}}
	for _, tc := range []struct {
		name      string
		self      string
		members   []peerCheckpoints
		divergent bool
	}{
		{"all agree", "a", []peerCheckpoints{at("n2", 1), at("n3", 1)}, false},
		{"outvoted", "b", []peerCheckpoints{at("n2", 1), at("n3", 1)}, true},
		{"in the majority", "a", []peerCheckpoints{at("n2", 1), at("n3", 2)}, false},
		{"two members differ", "a", []peerCheckpoints{at("n2", 2)}, true},
		{"three different hashes", "a", []peerCheckpoints{at("n2", 2), at("n3", 3)}, true},
		{"nobody else at the revision", "b", []peerCheckpoints{none}, false},
		{"alone with one that has none", "b", []peerCheckpoints{at("n2", 1), none}, true},
	} {
		got := verdict(tc.self, tc.members...)
		if (got != "") != tc.divergent {
			t.Errorf("%s: divergence %q, want divergent %v", tc.name, got, tc.divergent)
		}
		if tc.divergent && !strings.Contains(got, "revision 9") {
			t.Errorf("%s: %q does not name the revision", tc.name, got)
		}
	}
}
