package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcerts"
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

// A secure 3-node start, as the README gives it: certificates made with
// `memdbd cert`, every port bound on all interfaces, no --insecure. The
// members elect and forward to each other over mutual TLS, a client with
// a certificate writes and reads, and a caller without one is refused.
func TestSecureClusterWithMadeCertificates(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"create-ca", "-name", "ca"},
		{"create-ca", "-name", "peer-ca"},
		{"create-node", "-name", "member", "-hosts", "127.0.0.1,localhost"},
		{"create-node", "-name", "member-peer", "-ca", "peer-ca", "-hosts", "127.0.0.1,localhost"},
		{"create-client", "-name", "app"},
	} {
		out, err := exec.Command(memdbdBin, append([]string{"cert"}, append(args, "-dir", dir)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("memdbd cert %v: %v\n%s", args, err, out)
		}
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	app := &testcerts.Files{Cert: f("app.pem"), Key: f("app-key.pem")}
	creds := credentials.NewTLS(clientTLS(t, f("ca.pem"), app))
	// Listen on all interfaces; advertise loopback, which the certificates
	// name.
	onAllInterfaces := func(nd *node) {
		for i := 0; i+1 < len(nd.args); i++ {
			switch nd.args[i] {
			case "--client-addr":
				nd.args = append(nd.args, "--client-advertise", nd.args[i+1])
				nd.args[i+1] = "0.0.0.0" + nd.args[i+1][strings.LastIndex(nd.args[i+1], ":"):]
			case "--raft-addr":
				nd.args = append(nd.args, "--raft-advertise", nd.args[i+1])
				nd.args[i+1] = "0.0.0.0" + nd.args[i+1][strings.LastIndex(nd.args[i+1], ":"):]
			}
		}
	}
	adminPort := freeAddrs(t, 1)[0]
	adminPort = adminPort[strings.LastIndex(adminPort, ":"):]
	seed := func(nd *node) {
		onAllInterfaces(nd)
		if nd.idx == 0 {
			nd.args = append(nd.args, "--admin-addr", "0.0.0.0"+adminPort)
		}
	}
	c := newClusterWith(t, 3, seed, creds,
		"--tls-cert-file", f("member.pem"), "--tls-key-file", f("member-key.pem"), "--tls-ca-file", f("ca.pem"), "--tls-client-auth",
		"--peer-tls-cert-file", f("member-peer.pem"), "--peer-tls-key-file", f("member-peer-key.pem"), "--peer-tls-ca-file", f("peer-ca.pem"))
	for _, nd := range c.nodes {
		if b, err := os.ReadFile(nd.logPath); err != nil || strings.Contains(string(b), "--insecure") {
			t.Fatalf("%s warns of unprotected ports: %v\n%s", nd.id, err, b)
		}
	}
	l := c.waitReady(15*time.Second, nil)
	fi := c.others(l)[0]
	ctx, cancel := c.callCtx(30 * time.Second)
	defer cancel()
	if _, err := c.schema(fi).CreateTable(ctx, &pb.CreateTableRequest{Schema: &pb.TableSchema{Name: "kv", PrimaryKey: "k",
		Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}}}}); err != nil {
		t.Fatalf("create a table through a follower: %v", err)
	}
	if _, err := c.data(fi).Upsert(ctx, &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": pbString("a")}}); err != nil {
		t.Fatalf("write through a follower: %v", err)
	}
	// The schema change is in the follower's audit log under the client
	// certificate's name.
	waitFor(t, 5*time.Second, "the audit record of the table's creation", func() error {
		b, err := os.ReadFile(c.nodes[fi].logPath)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "log=audit") && strings.Contains(line, "CreateTable") && strings.Contains(line, "identity=app") {
				return nil
			}
		}
		return fmt.Errorf("not in %s's log", c.nodes[fi].id)
	})
	if g, err := c.data(fi).Get(ctx, &pb.GetRequest{Table: "kv", Key: pbString("a")}); err != nil || !g.Found {
		t.Fatalf("linearizable read through a follower: %v", err)
	}
	// The admin port serves TLS: health without credentials, pprof and
	// metrics only with a client certificate.
	get := func(path string, withCert bool) int {
		t.Helper()
		var files *testcerts.Files
		if withCert {
			files = app
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(t, f("ca.pem"), files)}}
		resp, err := hc.Get("https://127.0.0.1" + adminPort + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path     string
		withCert bool
		want     int
	}{
		{"/livez", false, 200}, {"/readyz", false, 0}, // ready or not, but open
		{"/debug/pprof/", false, 401}, {"/debug/pprof/cmdline", false, 401}, {"/metrics", false, 401},
		{"/debug/pprof/", true, 200}, {"/metrics", true, 200},
	} {
		if got := get(tc.path, tc.withCert); got != tc.want && (tc.want != 0 || got == http.StatusUnauthorized) {
			t.Errorf("admin %s (client certificate %v): %d, want %d", tc.path, tc.withCert, got, tc.want)
		}
	}

	anon, err := grpc.NewClient(c.nodes[fi].clientAddr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(t, f("ca.pem"), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	actx, acancel := context.WithTimeout(ctx, 5*time.Second)
	defer acancel()
	if _, err := pb.NewDataServiceClient(anon).Get(actx, &pb.GetRequest{Table: "kv", Key: pbString("a")}); err == nil {
		t.Fatal("a caller without a client certificate was served")
	}
}
