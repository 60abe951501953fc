package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcerts"
)

// compose runs docker-compose for one project and returns its output.
type compose struct {
	t       *testing.T
	project string
	file    string
	env     []string
}

func (c *compose) run(args ...string) (string, error) {
	cmd := exec.Command("docker-compose", append([]string{"-p", c.project, "-f", c.file}, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	return string(out), err
}

// dockerAvailable reports whether a Docker engine and docker-compose are
// usable. In CI they must be.
func dockerAvailable(t *testing.T) {
	t.Helper()
	_, errInfo := docker("info", "--format", "{{.ServerVersion}}")
	_, errCompose := exec.LookPath("docker-compose")
	if errInfo == nil && errCompose == nil {
		return
	}
	msg := fmt.Sprintf("no Docker engine or docker-compose here (docker info: %v; docker-compose: %v)", errInfo, errCompose)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI must run the container test")
	}
	t.Skip(msg)
}

// TestDockerCompose runs the compose deployment of deploy/docker: a write
// load, docker kill of the leader, a follower cut from the network, a
// restart. Writes continue on the majority, no acknowledged write is lost
// and the replicas converge. Everything is torn down at the end, even on
// failure.
func TestDockerCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers; skipped in -short")
	}
	dockerAvailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The image: the binary TestMain built, FROM scratch.
	image := fmt.Sprintf("memdbd:e2e-%d", os.Getpid())
	bctx := t.TempDir()
	bin, err := os.ReadFile(memdbdBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bctx, "memdbd"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := docker("build", "-q", "-t", image, "-f", filepath.Join(moduleRoot, "deploy/docker/Dockerfile"), bctx); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = docker("rmi", "-f", image) })

	ports := freeAddrs(t, 6)
	port := func(i int) string { return ports[i][strings.LastIndex(ports[i], ":")+1:] }
	// The deployment's init step writes the certificates here. Not
	// t.TempDir: the files belong to the containers' root, which a
	// developer's user may not remove.
	certsDir, err := os.MkdirTemp("", "memdbd-compose-certs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(certsDir) })
	c := &compose{t: t, project: fmt.Sprintf("memdbde2e%d", os.Getpid()), file: filepath.Join(moduleRoot, "deploy/docker/docker-compose.yml"),
		env: []string{"MEMDBD_IMAGE=" + image, "MEMDBD_CERTS_DIR=" + certsDir,
			"MEMDBD_N1_PORT=" + port(0), "MEMDBD_N2_PORT=" + port(1), "MEMDBD_N3_PORT=" + port(2),
			"MEMDBD_N1_ADMIN=" + port(3), "MEMDBD_N2_ADMIN=" + port(4), "MEMDBD_N3_ADMIN=" + port(5)}}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.run("logs", "--no-color", "--tail", "40")
			t.Logf("container logs:\n%s", out)
		}
		if out, err := c.run("down", "-v", "--timeout", "5"); err != nil {
			t.Logf("docker-compose down: %v\n%s", err, out)
		}
	})
	if out, err := c.run("up", "-d"); err != nil {
		t.Fatalf("docker-compose up: %v\n%s", err, out)
	}
	// Mutual TLS with the certificate the init step made for root.
	tlsCreds := grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(t, filepath.Join(certsDir, "ca.pem"),
		&testcerts.Files{Cert: filepath.Join(certsDir, "root.pem"), Key: filepath.Join(certsDir, "root-key.pem")})))
	eps := []string{ports[0], ports[1], ports[2]}
	services := []string{"n1", "n2", "n3"}
	container := func(i int) string { return c.project + "_" + services[i] + "_1" }
	conns := make([]*grpc.ClientConn, 3)
	for i := range eps {
		conns[i] = dialT(t, eps[i], tlsCreds)
	}
	status := func(i int) (*pb.StatusResponse, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return pb.NewClusterServiceClient(conns[i]).Status(cctx, &pb.StatusRequest{IncludeStateHash: true})
	}
	leader := func(skip int) int {
		for i := range eps {
			if i == skip {
				continue
			}
			if st, err := status(i); err == nil && st.Role == "Leader" {
				return i
			}
		}
		return -1
	}
	waitFor(t, 60*time.Second, "a leader in the compose cluster", func() error {
		if leader(-1) < 0 {
			return errors.New("no leader")
		}
		return nil
	})

	// The client knows only the published ports: the addresses the nodes
	// advertise (n1:7000...) do not resolve on the host.
	cl, err := client.New(ctx, client.Config{Endpoints: eps, DisableDiscovery: true, DialOptions: dialOptions(tlsCreds), RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.CreateTable(ctx, client.TableSchema{Name: "kv", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}}); err != nil {
		t.Fatal(err)
	}

	load := startLoad(ctx, cl, "kv", "w", 4, 0, 10*time.Second)
	defer load.abort()
	progress := func(what string, more int) {
		load.waitAcks(t, 30*time.Second, time.Time{}, load.ackCount()+more)
	}
	progress("writes before any fault", 100)

	// docker kill of the leader: writes continue on the other two.
	l := leader(-1)
	if out, err := docker("kill", container(l)); err != nil {
		t.Fatalf("docker kill: %v\n%s", err, out)
	}
	progress("writes after the leader was killed", 100)
	if out, err := c.run("start", services[l]); err != nil {
		t.Fatalf("restarting %s: %v\n%s", services[l], err, out)
	}

	// A follower cut from the network: the majority goes on.
	f := (leader(-1) + 1) % 3
	network := c.project + "_default"
	if out, err := docker("network", "disconnect", network, container(f)); err != nil {
		t.Fatalf("network disconnect: %v\n%s", err, out)
	}
	progress("writes with a follower cut off", 100)
	if out, err := docker("network", "connect", "--alias", services[f], network, container(f)); err != nil {
		t.Fatalf("network connect: %v\n%s", err, out)
	}
	progress("writes after the network healed", 50)
	load.stop()
	acked, failures, _ := load.snapshot()

	// Every acknowledged write is there once, and the replicas converge.
	for _, a := range acked {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		row, err := cl.Get(rctx, "kv", client.String(a.key))
		cancel()
		if err != nil || row.Version != 1 {
			t.Fatalf("acknowledged %s: %v (version %d)", a.key, err, row.Version)
		}
	}
	waitFor(t, 60*time.Second, "replicas to converge", func() error {
		var revs, hashes []uint64
		for i := range eps {
			st, err := status(i)
			if err != nil {
				return err
			}
			revs, hashes = append(revs, st.Header.Revision), append(hashes, st.StateHash)
		}
		if revs[0] != revs[1] || revs[1] != revs[2] || hashes[0] != hashes[1] || hashes[1] != hashes[2] {
			return fmt.Errorf("revisions %v hashes %x", revs, hashes)
		}
		return nil
	})
	var failed []error
	for _, f := range failures {
		failed = append(failed, fmt.Errorf("%s: %w", f.key, f.err))
	}
	t.Logf("%d acknowledged writes all present; %d writes failed (%v)", len(acked), len(failed), firstErrs(failed))
}

func firstErrs(errs []error) []error { return errs[:min(3, len(errs))] }

func dialT(t *testing.T, addr string, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, dialOptions(extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}
