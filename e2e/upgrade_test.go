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
	oldBin, newBin := buildVersion(t, "v1.0.0"), buildVersion(t, "v1.1.0")
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
			if st.Version != "v1.1.0" || st.LeaderId == "" {
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
		if v := version(i); v != "v1.1.0" {
			t.Fatalf("%s reports version %q", c.nodes[i].id, v)
		}
	}
	st, err := c.status(0)
	if err != nil || st.FeatureLevel != st.MaxCommandVersion || st.FeatureLevel == 0 {
		t.Fatalf("feature level %d, max command version %d (%v)", st.GetFeatureLevel(), st.GetMaxCommandVersion(), err)
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
