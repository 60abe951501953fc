package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/memdbd/memdbd/internal/testcluster"
)

// The admin commands against a live in-process cluster.
func TestAdminCommands(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	addr := cl.Members[0].Addr
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := subcommands[args[0]](args[1:], &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := run("health", "-addr", addr); code != 0 || !strings.Contains(out, "SERVING") {
		t.Fatalf("health: %d %s", code, out)
	}
	if code, out := run("members", "-addr", addr); code != 0 || strings.Count(out, "true") != 3 || !strings.Contains(out, "leader") {
		t.Fatalf("members: %d %s", code, out)
	}
	if code, out := run("status", "-addr", addr, "-hash"); code != 0 || !strings.Contains(out, `"stateHash"`) {
		t.Fatalf("status: %d %s", code, out)
	}
	old := cl.Members[cl.Leader()].NodeCfg.ID
	if code, out := run("transfer", "-addr", addr); code != 0 || !strings.Contains(out, "leader is now n") || strings.Contains(out, "now "+old) {
		t.Fatalf("transfer from %s: %d %s", old, code, out)
	}
	if code, _ := run("health", "-addr", "127.0.0.1:1", "-timeout", "200ms"); code == 0 {
		t.Fatal("health of a dead address succeeded")
	}
	if code, _ := run("status", "-no-such-flag"); code != 2 {
		t.Fatal("a bad flag should exit 2")
	}
}
