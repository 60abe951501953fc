package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memdbd/memdbd/chaos"
	"github.com/memdbd/memdbd/internal/childproc"
	"github.com/memdbd/memdbd/loadtest"
)

// TestFailoverRunReportsTheOutage runs the command as a user would: it
// spawns a real 3-process cluster, writes to it, kills the leader with
// SIGKILL two seconds in, and must report an outage of plausible length,
// service back afterwards, and the chart and JSON files.
func TestFailoverRunReportsTheOutage(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := chaos.ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	memdbd, err := chaos.BuildBinary(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(dir, "memdb-loadtest")
	if out, err := exec.Command("go", "build", "-o", tool, ".").CombinedOutput(); err != nil {
		t.Fatalf("building memdb-loadtest: %v\n%s", err, out)
	}

	jsonPath, svgPath := filepath.Join(dir, "run.json"), filepath.Join(dir, "run.svg")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, "-spawn", "-binary", memdbd, "-workload", "write", "-clients", "16", "-conns", "1",
		"-keys", "1000", "-warmup", "1s", "-duration", "8s", "-failover-at", "2s", "-failover", "kill",
		"-progress=false", "-json", jsonPath, "-svg", svgPath)
	cmd.SysProcAttr = childproc.Attr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("memdb-loadtest: %v\n%s", err, out)
	}
	t.Logf("%s", out)

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res loadtest.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Outages) != 1 || !strings.Contains(res.Outages[0].Event, "kill -9 of leader") {
		t.Fatalf("outages %+v, events %+v", res.Outages, res.Events)
	}
	o := res.Outages[0]
	// Killing the leader leaves no one to commit until an election (500 ms
	// timeout here) picks another; nothing near zero is plausible, and the
	// SDK must find the new leader well within the run.
	if o.Gap < 100*time.Millisecond || o.Gap > 5*time.Second {
		t.Fatalf("outage %v, want a visible gap of under 5s", o.Gap)
	}
	var after int64
	for _, b := range res.Timeline {
		if b.T > res.Events[0].T+o.Gap {
			after += b.OK
		}
	}
	if after == 0 {
		t.Fatalf("no successful write after the outage")
	}
	if !strings.Contains(string(out), "unavailability after") {
		t.Fatalf("the summary does not report the outage:\n%s", out)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil || !strings.Contains(string(svg), "kill -9 of leader") {
		t.Fatalf("chart %s: %v", svg, err)
	}
}
