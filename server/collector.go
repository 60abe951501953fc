package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/memdbd/memdbd/node"
)

// nodeCollector exports what the node knows at scrape time: Raft state,
// indexes and lag, snapshot age, and rows and bytes per table. Computed
// on scrape rather than kept up to date on every write, so the write path
// pays nothing for it.
type nodeCollector struct {
	n *node.Node

	state, term, commit, applied, lag, logPending, contact, snapIndex, snapAge, snapBytes, halted, rows, bytes                                  *prometheus.Desc
	watchers, histEvents, histBytes, histOldest, clockLag, nextExpiry, leaderRounds, readShortcuts, leaseReads, leaseProbes, leaseLeft, evicted *prometheus.Desc
}

func newNodeCollector(n *node.Node) *nodeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("memdb_"+name, help, labels, nil)
	}
	return &nodeCollector{n: n,
		state:      d("raft_state", "1 for the node's current Raft role.", "role"),
		term:       d("raft_term", "Current Raft term."),
		commit:     d("raft_commit_index", "Highest log index known committed."),
		applied:    d("raft_applied_index", "Highest log index the state machine applied."),
		lag:        d("raft_apply_lag_entries", "Committed entries not yet applied."),
		logPending: d("raft_log_pending_entries", "Log entries this node appended as leader that are not on its disk yet (it applies them once they are)."),
		contact:    d("raft_last_contact_seconds", "Seconds since this node last heard from a leader (0 on the leader)."),
		snapIndex:  d("snapshot_last_index", "Raft index of the newest snapshot on disk."),
		snapAge:    d("snapshot_age_seconds", "Age of the newest snapshot on disk."),
		snapBytes:  d("snapshot_last_bytes", "Size of the newest snapshot on disk."),
		halted:     d("fsm_halted", "1 when the state machine stopped on a command it does not know."),
		rows:       d("table_rows", "Rows per table.", "table"),
		bytes:      d("table_bytes", "Bytes of row data per table.", "table"),
		watchers:   d("watchers", "Watch streams open on this member."),
		histEvents: d("watch_history_events", "Changes retained for watches to start from."),
		histBytes:  d("watch_history_bytes", "Approximate bytes of the retained changes."),
		histOldest: d("watch_history_oldest_revision", "Oldest revision a watch can start from."),
		clockLag: d("clock_lag_seconds", "This node's clock minus the leader's, as seen in the last applied command "+
			"(replication delay included). Expiry across leader changes is as precise as the members' clocks agree."),
		leaderRounds: d("leadership_rounds_total", "Rounds this node ran as leader to confirm its leadership for linearizable reads without a lease: the other voters asked, after the reads arrived, "+
			"whether they still follow it (each round shared by the reads that arrived while the previous one ran)."),
		readShortcuts: d("read_index_without_round_total", "Read indexes this node gave followers as leader without a round: "+
			"the follower's request acknowledged the leader's term (clusters of up to three voters)."),
		leaseReads: d("read_index_leased_total", "Read indexes this node gave as leader under a read lease, without a round "+
			"(followers had promised not to elect another leader; see --read-lease)."),
		leaseProbes: d("read_lease_probes_total", "Rounds of lease probes this node sent to the other voters as leader."),
		leaseLeft:   d("read_lease_remaining_seconds", "How long the read lease this node holds as leader has left (0: none; reads take a round)."),
		evicted: d("sessions_evicted_total", "Write sessions the state machine forgot to make room for a new client while its session table was full, "+
			"oldest idle first (those clients lose exactly-once for writes they retry later)."),
		nextExpiry: d("ttl_next_expiry_seconds", "Seconds until the earliest row expiry (negative: overdue for the leader's sweep)."),
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.term, c.commit, c.applied, c.lag, c.logPending, c.contact, c.snapIndex, c.snapAge, c.snapBytes, c.halted, c.rows, c.bytes,
		c.watchers, c.histEvents, c.histBytes, c.histOldest, c.clockLag, c.nextExpiry, c.leaderRounds, c.readShortcuts, c.leaseReads, c.leaseProbes, c.leaseLeft, c.evicted} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.n.Status()
	for _, role := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if st.State == role {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, role)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(c.term, float64(st.Term))
	gauge(c.commit, float64(st.CommitIndex))
	gauge(c.applied, float64(st.AppliedIndex))
	gauge(c.lag, float64(max(int64(st.CommitIndex)-int64(st.AppliedIndex), 0)))
	gauge(c.logPending, float64(st.LogPending))
	if st.LastContact < 365*24*time.Hour {
		gauge(c.contact, st.LastContact.Seconds())
	}
	if idx, at, size, ok := c.n.LastSnapshotInfo(); ok {
		gauge(c.snapIndex, float64(idx))
		gauge(c.snapBytes, float64(size))
		if !at.IsZero() {
			gauge(c.snapAge, time.Since(at).Seconds())
		}
	}
	h := 0.0
	if c.n.FSM().Halted() != nil {
		h = 1
	}
	gauge(c.halted, h)
	ws := c.n.Watches().Stats()
	gauge(c.watchers, float64(ws.Watchers))
	gauge(c.histEvents, float64(ws.HistoryEvents))
	gauge(c.histBytes, float64(ws.HistoryBytes))
	gauge(c.histOldest, float64(ws.Oldest))
	gauge(c.clockLag, c.n.FSM().ClockLag().Seconds())
	rounds, shortcuts := c.n.ReadIndexCounts()
	ch <- prometheus.MustNewConstMetric(c.leaderRounds, prometheus.CounterValue, float64(rounds))
	ch <- prometheus.MustNewConstMetric(c.readShortcuts, prometheus.CounterValue, float64(shortcuts))
	leased, probes := c.n.LeaseCounts()
	ch <- prometheus.MustNewConstMetric(c.leaseReads, prometheus.CounterValue, float64(leased))
	ch <- prometheus.MustNewConstMetric(c.leaseProbes, prometheus.CounterValue, float64(probes))
	gauge(c.leaseLeft, c.n.LeaseRemaining().Seconds())
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(c.n.FSM().SessionsEvicted()))
	v := c.n.FSM().Store().View()
	if next := v.NextExpiry(); next != 0 {
		gauge(c.nextExpiry, time.Duration(next-time.Now().UnixNano()).Seconds())
	}
	for _, t := range v.Tables() {
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(t.Rows), t.Schema.Name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(t.Bytes), t.Schema.Name)
	}
}
