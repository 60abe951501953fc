package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// buildVersion builds memdbd reporting the given version.
func buildVersion(t *testing.T, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "memdbd-"+version)
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, "./cmd/memdbd")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", version, err, b)
	}
	return out
}

// TestRollingUpgrade restarts every node in turn on a new binary, the
// leader last after handing leadership over, while clients write and
// read: no client operation fails (the SDK retries), no write is lost,
// and every member ends on the new version. The longest write pause is
// reported.
func TestRollingUpgrade(t *testing.T) {
	rollingUpgrade(t, buildVersion(t, "v1.0.0"), buildVersion(t, "v1.1.0"), "v1.1.0", false)
}

// previousRelease is the commit of the release before the peer service
// moved to the Raft port and the session rules of command format 3.
const previousRelease = "c072b4525cd018a2170f0aeb8700ad7dd93b5f62"

// buildCommit builds memdbd from the source at a commit of this
// repository's history, reporting the given version.
func buildCommit(t *testing.T, commit, version string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", "git -C \"$ROOT\" archive \"$COMMIT\" | tar -x -C \"$DEST\"")
	archive.Env = append(os.Environ(), "ROOT="+moduleRoot, "COMMIT="+commit, "DEST="+src)
	if b, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("the source of %s is needed from this repository's history (a clone with its history): %v\n%s", commit, err, b)
	}
	out := filepath.Join(t.TempDir(), "memdbd-"+version)
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, "./cmd/memdbd")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s at %s: %v\n%s", version, commit, err, b)
	}
	return out
}

// TestRollingUpgradeFromPreviousRelease upgrades a cluster of the
// previous release, whose members call each other's peer service on the
// client port, to this version, which serves it on the Raft port only:
// while both run, each calls the other where it serves it, and no client
// operation fails. Session writes switch to command format 3 once every
// voter applies it.
func TestRollingUpgradeFromPreviousRelease(t *testing.T) {
	rollingUpgrade(t, buildCommit(t, previousRelease, "v1.0.0"), buildVersion(t, "v1.1.0"), "v1.1.0", true)
}

// rollingUpgrade runs a 3-node cluster on oldBin and restarts every node in
// turn on newBin (reporting newVersion), the leader last, under a write
// and read load.
// olderFormat: the old binary applies an older command format (access
// control is refused until the upgrade is complete).
func rollingUpgrade(t *testing.T, oldBin, newBin, newVersion string, olderFormat bool) {
	c := newClusterSeeded(t, 3, func(nd *node) { nd.bin = oldBin })
	cl := c.client()
	ctx, cancel := c.callCtx(90 * time.Second)
	defer cancel()
	if _, err := cl.CreateTable(ctx, client.TableSchema{Name: "kv", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var failures []error
	acked := map[string]bool{}
	var maxWrite time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d-%06d", w, i)
				start := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := cl.Upsert(wctx, "kv", client.Fields{"k": client.String(k)})
				cancel()
				d := time.Since(start)
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Errorf("write %s: %w", k, err))
				} else {
					acked[k] = true
					maxWrite = max(maxWrite, d)
				}
				mu.Unlock()
			}
		}()
	}
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := cl.Count(rctx, "kv", client.ScanOptions{})
				cancel()
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("read: %w", err))
					mu.Unlock()
				}
			}
		}()
	}
	progress := func(what string) {
		mu.Lock()
		base := len(acked)
		mu.Unlock()
		waitFor(t, 20*time.Second, what, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(acked) < base+50 {
				return fmt.Errorf("%d writes acknowledged", len(acked)-base)
			}
			return nil
		})
	}
	version := func(i int) string {
		st, err := c.status(i)
		if err != nil {
			return ""
		}
		return st.Version
	}
	upgrade := func(i int) {
		start := time.Now()
		if code, _ := c.stop(i); code != 0 {
			t.Fatalf("%s exited %d on SIGTERM", c.nodes[i].id, code)
		}
		c.nodes[i].bin = newBin
		c.start(i)
		waitFor(t, 30*time.Second, c.nodes[i].id+" back on the new version and caught up", func() error {
			st, err := c.status(i)
			if err != nil {
				return err
			}
			if st.Version != newVersion || st.LeaderId == "" {
				return fmt.Errorf("version %q leader %q", st.Version, st.LeaderId)
			}
			return nil
		})
		t.Logf("%s upgraded in %v", c.nodes[i].id, time.Since(start).Round(time.Millisecond))
		progress("writes after upgrading " + c.nodes[i].id)
	}

	progress("writes before the upgrade")
	leader := c.waitLeader(10*time.Second, nil)
	for i := range c.nodes {
		if i != leader {
			upgrade(i)
		}
	}
	// Access control is a newer command format: refused while the leader
	// runs the previous release, on the upgraded members too.
	mixed := c.others(leader)[0]
	if olderFormat {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := pb.NewAuthServiceClient(c.conn(mixed)).RoleAdd(actx, &pb.RoleAddRequest{Name: "early"})
		acancel()
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("an access-control change in a mixed-version cluster: %v, want FailedPrecondition", err)
		}
	}
	// The leader last: hand leadership to an upgraded node first.
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := pb.NewClusterServiceClient(c.conn(leader)).TransferLeadership(tctx, &pb.TransferLeadershipRequest{})
	tcancel()
	if err != nil {
		t.Fatalf("transferring leadership before upgrading the leader: %v", err)
	}
	upgrade(leader)
	close(stop)
	wg.Wait()

	if len(failures) > 0 {
		t.Fatalf("%d client operations failed during the rolling upgrade, first: %v", len(failures), errors.Join(failures[:min(3, len(failures))]...))
	}
	for i := range c.nodes {
		if v := version(i); v != newVersion {
			t.Fatalf("%s reports version %q", c.nodes[i].id, v)
		}
	}
	// The last member re-registers its command format shortly after it
	// serves.
	waitFor(t, 10*time.Second, "the feature level at the new command format", func() error {
		st, err := c.status(0)
		if err != nil || st.FeatureLevel != st.MaxCommandVersion || st.FeatureLevel == 0 {
			return fmt.Errorf("feature level %d, max command version %d (%v)", st.GetFeatureLevel(), st.GetMaxCommandVersion(), err)
		}
		return nil
	})
	// Once every member runs it, it applies.
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = pb.NewAuthServiceClient(c.conn(mixed)).RoleAdd(actx, &pb.RoleAddRequest{Name: "after-upgrade"})
	acancel()
	if err != nil {
		t.Fatalf("an access-control change after the upgrade: %v", err)
	}
	for k := range acked {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cl.Get(gctx, "kv", client.String(k))
		cancel()
		if err != nil {
			t.Fatalf("acknowledged write %s: %v", k, err)
		}
	}
	c.waitConverged(20 * time.Second)
	t.Logf("rolling upgrade: %d writes, 0 failed client operations, longest write %v", len(acked), maxWrite.Round(time.Millisecond))
}
