package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Secure by default: the real binary asked to listen beyond loopback
// without TLS refuses to start, naming the port and the way out; with
// --insecure it starts and warns.
func TestExposedPortsNeedInsecure(t *testing.T) {
	addrs := freeAddrs(t, 2)
	port := addrs[0][strings.LastIndex(addrs[0], ":"):]
	args := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--client-addr", "0.0.0.0" + port,
		"--raft-addr", addrs[1], "--initial-cluster", "n1=" + addrs[1]}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, memdbdBin, args...).CombinedOutput()
	var ee *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("an unprotected client port on all interfaces: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--client-addr 0.0.0.0"+port) || !strings.Contains(string(out), "--insecure") {
		t.Fatalf("the refusal does not name the port and --insecure:\n%s", out)
	}

	logPath := filepath.Join(t.TempDir(), "memdbd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, memdbdBin, append(args, "--insecure", "--data-dir", t.TempDir())...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitFor(t, 15*time.Second, "a warning about the open port", func() error {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "level=WARN") || !strings.Contains(string(b), "--insecure") || !strings.Contains(string(b), "--client-addr") {
			return fmt.Errorf("no warning yet:\n%s", b)
		}
		return nil
	})
}
