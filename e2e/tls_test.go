package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcerts"
)

// clientTLS trusts ca and presents the certificate in files (none when
// nil).
func clientTLS(t *testing.T, caFile string, files *testcerts.Files) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if files != nil {
		kp, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c
}

// TestMutualTLSOnClientAndRaftPorts runs three memdbd processes with TLS
// on every port: the gRPC port requires client certificates from one CA,
// the Raft port is mutual TLS under another. The cluster must elect,
// forward a follower's writes and read indexes to the leader (member to
// member over TLS), serve the SDK and the admin CLI with certificates, and
// refuse plaintext, certificate-less and foreign-CA callers on both ports.
func TestMutualTLSOnClientAndRaftPorts(t *testing.T) {
	dir := t.TempDir()
	apiCA := testcerts.NewCA(t, dir, "api")
	raftCA := testcerts.NewCA(t, dir, "raft")
	otherCA := testcerts.NewCA(t, dir, "other")
	member, raftCert := apiCA.Issue(t, "member"), raftCA.Issue(t, "member-raft")
	app, stranger := apiCA.Issue(t, "app"), otherCA.Issue(t, "stranger")

	appTLS := clientTLS(t, apiCA.CertFile, &app)
	c := newClusterWith(t, 3, nil, credentials.NewTLS(appTLS),
		"--tls-cert-file", member.Cert, "--tls-key-file", member.Key, "--tls-ca-file", apiCA.CertFile, "--tls-client-auth",
		"--peer-tls-cert-file", raftCert.Cert, "--peer-tls-key-file", raftCert.Key, "--peer-tls-ca-file", raftCA.CertFile)
	leader := c.waitReady(15*time.Second, nil)
	follower := c.others(leader)[0]

	// The SDK through one follower alone: the write is forwarded to the
	// leader and the linearizable read asks it for a read index, both
	// over the members' TLS connections.
	sdk := newSDKClient(t, c.ctx, client.Config{Endpoints: []string{c.nodes[follower].clientAddr},
		DisableDiscovery: true, TLS: appTLS})
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	if _, err := sdk.CreateTable(ctx, client.TableSchema{Name: "secrets", PrimaryKey: "k",
		Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}, {Name: "v", Type: client.TypeString}}}); err != nil {
		t.Fatalf("create table over TLS: %v", err)
	}
	if _, err := sdk.Upsert(ctx, "secrets", client.Fields{"k": client.String("a"), "v": client.String("1")}); err != nil {
		t.Fatalf("write through a follower over TLS: %v", err)
	}
	row, err := sdk.Get(ctx, "secrets", client.String("a"))
	if err != nil || row.Fields["v"] != client.String("1") {
		t.Fatalf("linearizable read through a follower over TLS: %v, %v", row, err)
	}

	// Callers the gRPC port must refuse.
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plaintext", insecure.NewCredentials()},
		{"TLS without a client certificate", credentials.NewTLS(clientTLS(t, apiCA.CertFile, nil))},
		{"a client certificate of another CA", credentials.NewTLS(clientTLS(t, apiCA.CertFile, &stranger))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := grpc.NewClient(c.nodes[follower].clientAddr, grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := c.callCtx(3 * time.Second)
			defer cancel()
			_, err = pb.NewClusterServiceClient(cc).Status(ctx, &pb.StatusRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("Status = %v, want Unavailable (handshake refused)", err)
			}
		})
	}

	// The Raft port: a peer with a certificate of the Raft CA completes
	// the handshake; one of another CA is refused.
	raftAddr := c.nodes[leader].raftAddr
	peerTLS := func(files testcerts.Files) error {
		cfg := clientTLS(t, raftCA.CertFile, &files)
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", raftAddr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		// With TLS 1.3 the server checks the client's certificate after
		// the client's side of the handshake is done: a refusal arrives as
		// an alert on the first read; silence means it was accepted.
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	var ne net.Error
	if err := peerTLS(raftCert); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a Raft peer with the Raft CA's certificate: %v, want an accepted, silent connection", err)
	}
	if err := peerTLS(stranger); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a Raft peer with another CA's certificate: %v, want a certificate error", err)
	}

	// The admin CLI with the client's certificate, and without one.
	cli := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(cctx, memdbdBin, append([]string{"status", "-addr", c.nodes[follower].clientAddr, "-tls-ca-file", apiCA.CertFile}, args...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := cli("-tls-cert-file", app.Cert, "-tls-key-file", app.Key); err != nil || !strings.Contains(out, `"leaderId": "`+c.nodes[leader].id+`"`) {
		t.Fatalf("memdbd status over mutual TLS: %v\n%s", err, out)
	}
	if out, err := cli(); err == nil {
		t.Fatalf("memdbd status without a client certificate succeeded:\n%s", out)
	}
}

// TestTLSSettingsAreCheckedTogether starts memdbd with incomplete TLS
// settings: each must fail at once, naming what is missing, before
// anything listens.
func TestTLSSettingsAreCheckedTogether(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	m := ca.Issue(t, "m")
	addrs := freeAddrs(t, 2)
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--client-addr", addrs[0], "--raft-addr", addrs[1]}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert-file", m.Cert}, "--tls-cert-file and --tls-key-file go together"},
		{[]string{"--tls-ca-file", ca.CertFile}, "need --tls-cert-file"},
		{[]string{"--tls-cert-file", m.Cert, "--tls-key-file", m.Key, "--tls-client-auth"}, "--tls-client-auth needs --tls-ca-file"},
		{[]string{"--peer-tls-cert-file", m.Cert, "--peer-tls-key-file", m.Key}, "go together"},
		{[]string{"--tls-cert-file", m.Key, "--tls-key-file", m.Key}, "loading certificate"},
		{[]string{"--tls-cert-file", m.Cert, "--tls-key-file", m.Key, "--tls-ca-file", m.Key}, "holds no PEM certificate"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, memdbdBin, append(append([]string(nil), base...), tc.args...)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("memdbd %s: %v, output %q; want a failure saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// TestCertificateRotationOnSIGHUP replaces a member's certificate files
// and sends SIGHUP: new connections must get the new certificate, with no
// restart, while the member keeps serving.
func TestCertificateRotationOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	first, second := ca.Issue(t, "first"), ca.Issue(t, "second")
	certFile, keyFile := dir+"/member.pem", dir+"/member-key.pem"
	install := func(f testcerts.Files) {
		for from, to := range map[string]string{f.Cert: certFile, f.Key: keyFile} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			// Write then rename, as a certificate manager would: a reader
			// never sees half a file.
			if err := os.WriteFile(to+".new", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(to+".new", to); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first)
	trust := clientTLS(t, ca.CertFile, nil)
	c := newClusterWith(t, 1, nil, credentials.NewTLS(trust), "--tls-cert-file", certFile, "--tls-key-file", keyFile)
	presented := func() (string, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", c.nodes[0].clientAddr, trust)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	if cn, err := presented(); err != nil || cn != "first" {
		t.Fatalf("before rotation: %q, %v", cn, err)
	}
	install(second)
	if cn, _ := presented(); cn != "first" {
		t.Fatalf("the new files were used before SIGHUP: %q", cn)
	}
	c.sendSignal(0, syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the rotated certificate", func() error {
		cn, err := presented()
		if err != nil {
			return err
		}
		if cn != "second" {
			return errors.New("still presenting " + cn)
		}
		return nil
	})
	if _, err := c.status(0); err != nil {
		t.Fatalf("status after rotation: %v", err)
	}
}
