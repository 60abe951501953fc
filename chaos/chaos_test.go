package chaos

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memdbd/memdbd/client"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func memdbd(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		wd, _ := os.Getwd()
		root, err := ModuleRoot(wd)
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "memdb-chaos-bin")
		if err != nil {
			buildErr = err
			return
		}
		binary, buildErr = BuildBinary(root, dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// TestFaultSuite is the short, fixed-seed suite CI runs on every change:
// each family of faults for a short while against every workload, every
// checker required to pass.
func TestFaultSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs real clusters for minutes; skipped in -short")
	}
	suites := []struct {
		name    string
		seed    uint64
		nemeses string
		args    []string
		auth    bool
	}{
		{"crashes", 11, "kill-leader,kill-follower,kill-all,pause-leader,pause-leader-reads,membership-churn", nil, false},
		{"partitions", 12, "partition-leader,partition-follower,bridge,one-way,flapping,all-isolated", nil, false},
		// Every fault here forces a snapshot install, so that installs (and
		// kills during them) are certain to happen in every run.
		{"snapshots", 13, "snapshot-catchup", nil, false},
		{"mix", 14, "", nil, false},
		// Without leases every linearizable read on a leader is confirmed
		// by a round: reads sent to a paused leader must not be answered
		// with what it knew before the pause (hashicorp/raft's own check
		// failed this; node.confirmRound).
		{"reads-without-leases", 15, "pause-leader-reads,pause-leader,partition-leader", []string{"--read-lease=false"}, false},
		// Access control on (a root user bootstrapped, every call
		// authenticated and authorized, forwarded writes authorized by the
		// leader for their client). Not membership churn: a node joining
		// over plaintext has no identity to join with (over TLS its
		// member certificate is one).
		{"auth", 16, "kill-leader,kill-follower,partition-leader,pause-leader,snapshot-catchup", nil, true},
		// The default log store is the WAL; raft-boltdb stays selectable
		// and gets a short run of its own.
		{"boltdb-log", 17, "kill-leader,kill-all,partition-leader,snapshot-catchup", []string{"--raft-log-store=boltdb"}, false},
	}
	wd, _ := os.Getwd()
	artifacts := filepath.Join(wd, "..", "artifacts", "chaos")
	for _, s := range suites {
		t.Run(s.name, func(t *testing.T) {
			cfg := Config{Seed: s.seed, Duration: 25 * time.Second, Interval: 2500 * time.Millisecond,
				Binary: memdbd(t), Dir: t.TempDir(), Artifacts: artifacts, Log: testWriter{t}, ExtraArgs: s.args}
			if s.auth {
				cfg.Root = &client.Credentials{User: "root", Password: "chaos-root-password"}
			}
			if s.nemeses != "" {
				cfg.Nemeses = strings.Split(s.nemeses, ",")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			rep, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + rep.String())
			if !rep.OK() {
				t.Fatalf("a checker failed (seed %d); artifacts in %s", s.seed, rep.Artifacts)
			}
			if rep.SnapshotsTaken == 0 {
				t.Fatal("no snapshot was taken: the run did not exercise snapshots")
			}
			leasesOff := slices.Contains(s.args, "--read-lease=false")
			if rep.LeaseTerms != 0 && leasesOff {
				t.Fatalf("%d leader terms held a read lease with leases off", rep.LeaseTerms)
			}
			if rep.LeaseTerms == 0 && !leasesOff {
				t.Fatal("no leader held a read lease: the run did not exercise leased reads")
			}
			if s.auth && (rep.AuthBootstraps != 1 || rep.AuthRefusals != 0) {
				t.Fatalf("with access control: %d bootstraps (want 1), %d refused calls (want 0)", rep.AuthBootstraps, rep.AuthRefusals)
			}
			if !s.auth && rep.AuthBootstraps != 0 {
				t.Fatalf("access control was bootstrapped in a run without it")
			}
			if s.name == "snapshots" && rep.SnapshotInstalls == 0 {
				t.Fatal("no follower installed a snapshot from the leader")
			}
		})
	}
}

// TestLiveCluster checks a cluster the harness did not start, as an
// operator would with -endpoints: every workload and checker passes, the
// user's own table is untouched, and the workloads' tables are gone
// afterwards.
func TestLiveCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real cluster; skipped in -short")
	}
	cl, err := StartCluster(ClusterConfig{Binary: memdbd(t), Dir: t.TempDir(), Nodes: 3, ElectionTimeout: 500 * time.Millisecond,
		SnapshotThreshold: 1000, TrailingLogs: 500, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A user's table with the name a workload uses without a prefix.
	if _, err := c.CreateTable(ctx, client.TableSchema{Name: "bank", PrimaryKey: "id", Fields: []client.FieldSchema{{Name: "id", Type: client.TypeInt}}}); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, Config{Seed: 3, Duration: 5 * time.Second, Endpoints: cl.Endpoints(), TablePrefix: "check3_", Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if !rep.OK() || len(rep.Events) != 0 {
		t.Fatalf("live check: OK %v, %d faults of its own", rep.OK(), len(rep.Events))
	}
	tables, err := c.ListTables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0].Schema.Name != "bank" {
		t.Fatalf("tables after the check: %v, want the user's bank alone", tables)
	}
	if _, err := Run(ctx, Config{Endpoints: cl.Endpoints(), Nemeses: []string{"kill-leader"}}); err == nil {
		t.Fatal("a nemesis against a live cluster was accepted")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The proxies pass, delay and cut traffic per direction.
func TestPeerProxyRules(t *testing.T) {
	r := newRules()
	if (r.get(0, 1) != Rule{}) {
		t.Fatal("zero rule should pass")
	}
	r.set(0, 1, Rule{Drop: true})
	if !r.get(0, 1).Drop || r.get(1, 0).Drop {
		t.Fatal("rules are per direction")
	}
	r.healAll()
	if r.get(0, 1).Drop {
		t.Fatal("heal did not clear the rule")
	}
}
