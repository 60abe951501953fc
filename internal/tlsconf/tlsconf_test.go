package tlsconf

import (
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/memdbd/memdbd/internal/testcerts"
)

// handshake connects a client with cfg to a listener serving srv and
// returns the common name of the certificate the server presented.
func handshake(t *testing.T, srv, cfg *tls.Config) (string, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*tls.Conn).Handshake()
		// Hold the connection until the client has read what it needs.
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = c.Read(make([]byte, 1))
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// A refused client certificate shows on the first read (TLS 1.3).
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestMutualTLSAndRotation(t *testing.T) {
	dir := t.TempDir()
	ca, other := testcerts.NewCA(t, dir, "ca"), testcerts.NewCA(t, dir, "other")
	first, second, client, stranger := ca.Issue(t, "first"), ca.Issue(t, "second"), ca.Issue(t, "client"), other.Issue(t, "stranger")
	cas, err := LoadCAs(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	// The server's pair is loaded from files the test then overwrites.
	certFile, keyFile := dir+"/srv.pem", dir+"/srv-key.pem"
	copyFile(t, first.Cert, certFile)
	copyFile(t, first.Key, keyFile)
	srvPair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(srvPair, cas, true)
	clientPair, err := LoadKeyPair(client.Cert, client.Key)
	if err != nil {
		t.Fatal(err)
	}
	good := Client(clientPair, cas)
	good.ServerName = "localhost"

	if cn, err := handshake(t, srv, good); err != nil || cn != "first" {
		t.Fatalf("handshake with a client certificate: %q, %v", cn, err)
	}
	noCert := Client(nil, cas)
	noCert.ServerName = "localhost"
	if _, err := handshake(t, srv, noCert); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	strangerPair, err := LoadKeyPair(stranger.Cert, stranger.Key)
	if err != nil {
		t.Fatal(err)
	}
	foreign := Client(strangerPair, cas)
	foreign.ServerName = "localhost"
	if _, err := handshake(t, srv, foreign); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}

	// Rotation: new files, Reload, and the next handshake presents them.
	copyFile(t, second.Cert, certFile)
	copyFile(t, second.Key, keyFile)
	if cn, _ := handshake(t, srv, good); cn != "first" {
		t.Fatalf("before Reload the server presented %q, want the pair it loaded", cn)
	}
	if err := srvPair.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn, err := handshake(t, srv, good); err != nil || cn != "second" {
		t.Fatalf("after Reload: %q, %v; want the new certificate", cn, err)
	}
	// A broken file on reload keeps the pair in use.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srvPair.Reload(); err == nil {
		t.Fatal("Reload of a broken certificate succeeded")
	}
	if cn, err := handshake(t, srv, good); err != nil || cn != "second" {
		t.Fatalf("after a failed Reload: %q, %v; want the previous certificate", cn, err)
	}
	if srvPair.Leaf().Subject.CommonName != "second" {
		t.Fatalf("Leaf = %q", srvPair.Leaf().Subject.CommonName)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	f := ca.Issue(t, "x")
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"no key file", func() error { _, err := LoadKeyPair(f.Cert, ""); return err }, "both"},
		{"key as certificate", func() error { _, err := LoadKeyPair(f.Key, f.Key); return err }, "loading certificate"},
		{"missing CA file", func() error { _, err := LoadCAs(dir + "/none.pem"); return err }, "reading CA file"},
		{"CA file without certificates", func() error { _, err := LoadCAs(f.Key); return err }, "holds no PEM certificate"},
	} {
		if err := tc.err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
