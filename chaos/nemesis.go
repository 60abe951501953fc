package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Nemesis injects one fault and repairs it before returning. It reports
// what it did, and whether it took away the leader (for failover figures).
type Nemesis struct {
	Name string
	Run  func(ctx context.Context, h *harness, rng *rand.Rand) (desc string, leaderLoss bool)
}

// Nemeses lists every nemesis by name.
var Nemeses = []Nemesis{
	{"kill-leader", killLeader},
	{"kill-follower", killFollower},
	{"kill-all", killAll},
	{"pause-leader", pauseLeader},
	{"pause-leader-reads", pauseLeaderReads},
	{"partition-leader", partitionLeader},
	{"partition-follower", partitionFollower},
	{"bridge", bridge},
	{"one-way", oneWay},
	{"flapping", flapping},
	{"all-isolated", allIsolated},
	{"snapshot-catchup", snapshotCatchup},
	{"transfer-leader", transferLeader},
	{"lose-replies", loseReplies},
	{"delay", delayLinks},
	{"membership-churn", membershipChurn},
}

// NemesisByName finds a nemesis.
func NemesisByName(name string) (Nemesis, bool) {
	for _, n := range Nemeses {
		if n.Name == name {
			return n, true
		}
	}
	return Nemesis{}, false
}

// NemesisNames lists the names.
func NemesisNames() []string {
	var out []string
	for _, n := range Nemeses {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// leaderOrAny returns the leader, or a random running node when none is
// known.
func (h *harness) leaderOrAny(ctx context.Context, rng *rand.Rand) (int, bool) {
	if l := h.c.Leader(ctx); l >= 0 {
		return l, true
	}
	return rng.IntN(len(h.c.nodes)), false
}

func (h *harness) follower(ctx context.Context, rng *rand.Rand) int {
	l := h.c.Leader(ctx)
	for {
		f := rng.IntN(len(h.c.nodes))
		if f != l {
			return f
		}
	}
}

func others(n, i int) []int {
	var out []int
	for j := 0; j < n; j++ {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

func killLeader(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	l, isLeader := h.leaderOrAny(ctx, rng)
	h.c.Kill(l)
	h.mark()
	down := between(rng, 500*time.Millisecond, 2*time.Second)
	sleepCtx(ctx, down)
	_ = h.c.Start(l, "")
	return fmt.Sprintf("kill -9 %s (leader=%v), restarted after %v", h.c.nodes[l].id, isLeader, down.Round(time.Millisecond)), isLeader
}

func killFollower(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	f := h.follower(ctx, rng)
	h.c.Kill(f)
	down := between(rng, 500*time.Millisecond, 2*time.Second)
	sleepCtx(ctx, down)
	_ = h.c.Start(f, "")
	return fmt.Sprintf("kill -9 follower %s, restarted after %v", h.c.nodes[f].id, down.Round(time.Millisecond)), false
}

func killAll(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	for i := range h.c.nodes {
		h.c.Kill(i)
	}
	h.mark()
	down := between(rng, 200*time.Millisecond, time.Second)
	sleepCtx(ctx, down)
	for _, i := range rng.Perm(len(h.c.nodes)) {
		_ = h.c.Start(i, "")
	}
	return fmt.Sprintf("kill -9 all nodes, restarted after %v", down.Round(time.Millisecond)), true
}

func pauseLeader(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	l, isLeader := h.leaderOrAny(ctx, rng)
	et := h.cfg.ElectionTimeout
	d := between(rng, et*3/2, 3*et)
	h.c.Pause(l)
	h.mark()
	sleepCtx(ctx, d)
	h.c.Resume(l)
	return fmt.Sprintf("SIGSTOP %s (leader=%v) for %v", h.c.nodes[l].id, isLeader, d.Round(time.Millisecond)), isLeader
}

// pauseLeaderReads pauses the leader until the others have elected a new
// one and it has acknowledged a register write, then sends linearizable
// reads of that register to the paused old leader and resumes it. The
// reads wait in its sockets and it meets them before (or while) it learns
// of the new term: a leader that trusted a read lease (or anything else)
// past its pause would answer them from the state it had before the write,
// and the register history fails the linearizability check. Without the
// register workload it is pause-leader.
func pauseLeaderReads(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	l, isLeader := h.leaderOrAny(ctx, rng)
	if !isLeader || h.regKeys == 0 {
		return pauseLeader(ctx, h, rng)
	}
	old, err := grpc.NewClient(h.c.nodes[l].clientAddr, dialOptions(h.cfg.Root)...)
	if err != nil {
		return pauseLeader(ctx, h, rng)
	}
	defer old.Close()
	key := rng.IntN(h.regKeys)
	get := &pb.GetRequest{Table: "register", Key: &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(key)}}}
	// Connect before the pause.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	_, _ = pb.NewDataServiceClient(old).Get(wctx, get)
	cancel()

	h.c.Pause(l)
	h.mark()
	paused := time.Now()
	defer h.c.Resume(l)
	// A new leader, and a write of a value no worker writes, acknowledged.
	nl := -1
	for nl < 0 && time.Since(paused) < 5*time.Second && ctx.Err() == nil {
		sleepCtx(ctx, 20*time.Millisecond)
		if i := h.c.Leader(ctx); i >= 0 && i != l {
			nl = i
		}
	}
	if nl < 0 {
		h.c.Resume(l)
		return fmt.Sprintf("SIGSTOP %s (leader) for %v; no new leader meanwhile", h.c.nodes[l].id, time.Since(paused).Round(time.Millisecond)), true
	}
	h.staleProbe++
	val := int64(1000 + h.staleProbe)
	wrote := h.registerWrite(ctx, nl, key, val)
	// The reads, sent to the paused old leader.
	const reads = 8
	var wg sync.WaitGroup
	var served atomic.Int64
	for i := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			call := h.rec.Now()
			resp, err := pb.NewDataServiceClient(old).Get(rctx, get)
			if err != nil || !resp.Found {
				return // observed nothing
			}
			served.Add(1)
			h.rec.addOp(porcupine.Operation{ClientId: 10000 + i, Input: regInput{Op: "read", Key: key},
				Output: regOutput{Value: resp.Row.Fields["v"].GetIntValue()}, Call: call, Return: h.rec.Now()})
		}()
	}
	sleepCtx(ctx, 50*time.Millisecond) // let them reach its sockets
	h.c.Resume(l)
	d := time.Since(paused)
	wg.Wait()
	return fmt.Sprintf("SIGSTOP %s (leader) for %v; register %d := %d through %s (%s); %d of %d reads sent to the paused leader answered",
		h.c.nodes[l].id, d.Round(time.Millisecond), key, val, h.c.nodes[nl].id, wrote, served.Load(), reads), true
}

// registerWrite writes val to register key through node i, recorded in the
// register history.
func (h *harness) registerWrite(ctx context.Context, i, key int, val int64) string {
	conn, err := grpc.NewClient(h.c.nodes[i].clientAddr, dialOptions(h.cfg.Root)...)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	call := h.rec.Now()
	_, err = pb.NewDataServiceClient(conn).Upsert(wctx, &pb.UpsertRequest{Table: "register", Fields: map[string]*pb.Value{
		"k": {Kind: &pb.Value_IntValue{IntValue: int64(key)}}, "v": {Kind: &pb.Value_IntValue{IntValue: val}}}})
	ret, out := h.rec.Now(), regOutput{}
	if err != nil {
		ret, out.Unknown = -1, true
	}
	h.rec.addOp(porcupine.Operation{ClientId: 9999, Input: regInput{Op: "write", Key: key, Arg: val}, Output: out, Call: call, Return: ret})
	if err != nil {
		return "outcome unknown: " + err.Error()
	}
	return "acknowledged"
}

func partitionLeader(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	l, isLeader := h.leaderOrAny(ctx, rng)
	d := between(rng, time.Second, 3*time.Second)
	h.c.Partition([]int{l}, others(len(h.c.nodes), l))
	h.mark()
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	return fmt.Sprintf("isolate leader %s (leader=%v) for %v", h.c.nodes[l].id, isLeader, d.Round(time.Millisecond)), isLeader
}

func partitionFollower(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	f := h.follower(ctx, rng)
	d := between(rng, time.Second, 3*time.Second)
	h.c.Partition([]int{f}, others(len(h.c.nodes), f))
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	return fmt.Sprintf("isolate follower %s for %v", h.c.nodes[f].id, d.Round(time.Millisecond)), false
}

func bridge(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	perm := rng.Perm(len(h.c.nodes))
	a, b, c := perm[0], perm[1], perm[2]
	d := between(rng, time.Second, 3*time.Second)
	h.c.SetRule(a, c, Rule{Drop: true})
	h.c.SetRule(c, a, Rule{Drop: true})
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	return fmt.Sprintf("bridge: %s and %s cut, %s sees both, for %v", h.c.nodes[a].id, h.c.nodes[c].id, h.c.nodes[b].id, d.Round(time.Millisecond)), false
}

func oneWay(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	l, isLeader := h.leaderOrAny(ctx, rng)
	d := between(rng, time.Second, 3*time.Second)
	for _, o := range others(len(h.c.nodes), l) {
		h.c.SetRule(l, o, Rule{Drop: true})
	}
	h.mark()
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	return fmt.Sprintf("one-way: nothing from %s (leader=%v) reaches the others for %v", h.c.nodes[l].id, isLeader, d.Round(time.Millisecond)), isLeader
}

func flapping(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	total := between(rng, 2*time.Second, 4*time.Second)
	end := time.Now().Add(total)
	flaps := 0
	for time.Now().Before(end) && ctx.Err() == nil {
		i := rng.IntN(len(h.c.nodes))
		h.c.Partition([]int{i}, others(len(h.c.nodes), i))
		sleepCtx(ctx, between(rng, 100*time.Millisecond, 400*time.Millisecond))
		h.c.HealNetwork()
		sleepCtx(ctx, between(rng, 100*time.Millisecond, 400*time.Millisecond))
		flaps++
	}
	return fmt.Sprintf("flapping partitions: %d flaps in %v", flaps, total.Round(time.Millisecond)), false
}

func allIsolated(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	d := between(rng, time.Second, 2*time.Second)
	var groups [][]int
	for i := range h.c.nodes {
		groups = append(groups, []int{i})
	}
	h.c.Partition(groups...)
	h.mark()
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	return fmt.Sprintf("every node isolated for %v", d.Round(time.Millisecond)), true
}

// snapshotCatchup cuts a follower off long enough for the log to move past
// what the leader keeps, so it must install a snapshot; half the time it
// is killed while doing so.
func snapshotCatchup(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	f := h.follower(ctx, rng)
	d := between(rng, 3*time.Second, 5*time.Second)
	h.c.Partition([]int{f}, others(len(h.c.nodes), f))
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	desc := fmt.Sprintf("isolate follower %s for %v to force a snapshot install", h.c.nodes[f].id, d.Round(time.Millisecond))
	if rng.IntN(2) == 0 {
		sleepCtx(ctx, between(rng, 50*time.Millisecond, 300*time.Millisecond))
		h.c.Kill(f)
		sleepCtx(ctx, 500*time.Millisecond)
		_ = h.c.Start(f, "")
		desc += ", killed during catch-up and restarted"
	}
	return desc, false
}

func transferLeader(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	l := h.c.Leader(ctx)
	if l < 0 {
		return "transfer-leader: no leader to transfer from", false
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	h.mark()
	if err := h.c.TransferLeadership(cctx, l); err != nil {
		return fmt.Sprintf("transfer leadership from %s failed: %v", h.c.nodes[l].id, err), true
	}
	return fmt.Sprintf("planned leadership transfer from %s", h.c.nodes[l].id), true
}

func loseReplies(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	n := 0
	for i := range h.c.nodes {
		k := 1 + rng.IntN(3)
		h.c.LoseReplies(i, k)
		n += k
	}
	sleepCtx(ctx, between(rng, 500*time.Millisecond, 1500*time.Millisecond))
	for i := range h.c.nodes {
		h.c.LoseReplies(i, 0)
	}
	return fmt.Sprintf("client proxies armed to lose %d replies after the server answered", n), false
}

func delayLinks(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	delay := between(rng, 20*time.Millisecond, 150*time.Millisecond)
	d := between(rng, time.Second, 3*time.Second)
	for i := range h.c.nodes {
		for j := range h.c.nodes {
			if i != j {
				h.c.SetRule(i, j, Rule{Delay: delay})
			}
		}
	}
	sleepCtx(ctx, d)
	h.c.HealNetwork()
	return fmt.Sprintf("every link delayed by %v for %v", delay.Round(time.Millisecond), d.Round(time.Millisecond)), false
}

// membershipChurn removes a follower, wipes its data, has it join again as
// a non-voter and promotes it once it has caught up (forced if it cannot
// within a bound, so that the cluster returns to three voters).
func membershipChurn(ctx context.Context, h *harness, rng *rand.Rand) (string, bool) {
	f := h.follower(ctx, rng)
	via := (f + 1) % len(h.c.nodes)
	id := h.c.NodeID(f)
	admin, done, err := h.c.admin(via)
	if err != nil {
		return "membership churn: " + err.Error(), false
	}
	defer done()
	call := func(what string, fn func(context.Context) error) error {
		var err error
		for try := 0; try < 20 && ctx.Err() == nil; try++ {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = fn(cctx)
			cancel()
			if err == nil {
				return nil
			}
			sleepCtx(ctx, 250*time.Millisecond)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := call("remove", func(c context.Context) error {
		_, err := admin.RemoveMember(c, &pb.RemoveMemberRequest{NodeId: id})
		return err
	}); err != nil {
		return fmt.Sprintf("membership churn of %s: %v", id, err), false
	}
	h.c.Kill(f)
	_ = h.c.Wipe(f)
	if err := h.c.StartJoining(f, h.c.nodes[via].clientAddr, true); err != nil {
		return fmt.Sprintf("membership churn of %s: rejoin: %v", id, err), false
	}
	forced := false
	err = call("promote", func(c context.Context) error {
		_, err := admin.PromoteMember(c, &pb.PromoteMemberRequest{NodeId: id})
		return err
	})
	if err != nil {
		forced = true
		err = call("forced promote", func(c context.Context) error {
			_, err := admin.PromoteMember(c, &pb.PromoteMemberRequest{NodeId: id, Force: true})
			return err
		})
	}
	if err != nil {
		return fmt.Sprintf("membership churn of %s: %v", id, err), false
	}
	desc := fmt.Sprintf("removed %s, wiped it, rejoined as a non-voter and promoted it", id)
	if forced {
		desc += " (forced: it had not caught up in time)"
	}
	return desc, false
}
