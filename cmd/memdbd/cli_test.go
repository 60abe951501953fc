package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/memdbd/memdbd/client"
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

	// watch: the current rows, then the changes, as JSON lines.
	c, err := client.New(t.Context(), client.Config{Endpoints: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateTable(t.Context(), client.TableSchema{Name: "cli", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(t.Context(), "cli", client.Fields{"k": client.String("a1"), "n": client.Int(7)}); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		_, _ = c.Delete(t.Context(), "cli", client.String("a1"))
	}()
	code, out := run("watch", "-addr", addr, "-table", "cli", "-prefix", "a", "-snapshot", "-count", "1", "-for", "20s")
	if code != 0 || !strings.Contains(out, `"type":"row"`) || !strings.Contains(out, `"n":7`) || !strings.Contains(out, `"type":"delete"`) {
		t.Fatalf("watch: %d %s", code, out)
	}
	if code, _ := run("watch", "-addr", addr); code != 2 {
		t.Fatal("watch without -table should exit 2")
	}
}
