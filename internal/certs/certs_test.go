package certs

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func parse(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s is not PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A CA signs node certificates that verify as servers for their hosts and
// as clients, and client certificates that verify as clients only; keys
// are private to their owner; nothing is overwritten; a certificate is
// signed only with the CA's own key.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	ca, err := CreateCA(dir, "ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node, err := Create(dir, ca, Node, "n1", []string{"n1.example", "10.0.0.1"}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Create(dir, ca, Client, "app", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caCert := parse(t, ca.Cert)
	roots.AddCert(caCert)
	nc := parse(t, node.Cert)
	for _, name := range []string{"n1.example", "10.0.0.1"} {
		if _, err := nc.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Fatalf("node certificate as server for %s: %v", name, err)
		}
	}
	if _, err := nc.Verify(x509.VerifyOptions{Roots: roots, DNSName: "n2.example"}); err == nil {
		t.Fatal("node certificate verified for a host it does not name")
	}
	if _, err := nc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("node certificate as client: %v", err)
	}
	if nc.NotAfter.After(caCert.NotAfter) {
		t.Fatalf("node certificate outlives its CA: %v > %v", nc.NotAfter, caCert.NotAfter)
	}
	cc := parse(t, cl.Cert)
	if cc.Subject.CommonName != "app" {
		t.Fatalf("client common name %q", cc.Subject.CommonName)
	}
	if _, err := cc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate as client: %v", err)
	}
	if _, err := cc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("client certificate verified as a server")
	}
	for _, k := range []string{ca.Key, node.Key, cl.Key} {
		st, err := os.Stat(k)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v (%v), want 0600", k, st.Mode().Perm(), err)
		}
	}

	before, _ := os.ReadFile(node.Key)
	if _, err := Create(dir, ca, Node, "n1", []string{"n1.example"}, time.Hour); !errors.Is(err, ErrExists) {
		t.Fatalf("making n1 again: %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(node.Key); string(after) != string(before) {
		t.Fatal("an existing key was overwritten")
	}
	if _, err := CreateCA(dir, "ca", time.Hour); !errors.Is(err, ErrExists) {
		t.Fatalf("making the CA again: %v, want ErrExists", err)
	}

	other, err := CreateCA(dir, "other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir, Files{Cert: ca.Cert, Key: other.Key}, Client, "x", nil, time.Hour); err == nil {
		t.Fatal("signed with a key that is not the CA's")
	}
	if _, err := Create(dir, Files{Cert: node.Cert, Key: node.Key}, Client, "y", nil, time.Hour); err == nil {
		t.Fatal("signed with a certificate that is not a CA")
	}
	if _, err := Create(dir, ca, Node, "n3", nil, time.Hour); err == nil {
		t.Fatal("a node certificate without hosts")
	}
	if _, err := Create(dir, ca, Client, "../escape", nil, time.Hour); err == nil {
		t.Fatal("a name with a path")
	}
	if _, err := os.Stat(filepath.Join(dir, "x.pem")); err == nil {
		t.Fatal("a refused certificate left a file")
	}
}
