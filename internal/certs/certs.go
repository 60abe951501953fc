// Package certs makes the certificates a memdbd deployment needs: a
// certificate authority, member certificates (for the gRPC and Raft ports,
// valid as server and as client, since members call each other) and client
// certificates, as PEM files. It is what `memdbd cert` runs.
//
// Keys are ECDSA P-256, written with mode 0600; nothing is overwritten.
// The CA's key is what an attacker would want most: keep it off the
// members once their certificates are made.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Kind is what a certificate is for.
type Kind int

const (
	// Node certificates are for a member's ports: server and client use,
	// for the names and addresses it is reached at.
	Node Kind = iota + 1
	// Client certificates identify a client (their common name).
	Client
)

// Files are the PEM files of a certificate and its key.
type Files struct{ Cert, Key string }

// ErrExists: a file to be written is already there.
var ErrExists = errors.New("file exists")

// CreateCA makes a certificate authority named name in dir: name.pem and
// name-key.pem, valid for validity.
func CreateCA(dir, name string, validity time.Duration) (Files, error) {
	f := Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := checkNew(f); err != nil {
		return f, err
	}
	key, tmpl, err := newTemplate(name, validity)
	if err != nil {
		return f, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.MaxPathLenZero = true, true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return f, err
	}
	return f, write(f, der, key)
}

// Create makes a certificate of kind named name (its common name and the
// stem of its files in dir), signed by the CA in ca, valid for validity.
// hosts are the DNS names and IP addresses a node is reached at (each
// member's --client-advertise and --raft-advertise hosts); a client
// certificate takes none.
func Create(dir string, ca Files, kind Kind, name string, hosts []string, validity time.Duration) (Files, error) {
	f := Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	switch {
	case name == "" || strings.ContainsAny(name, `/\`):
		return f, fmt.Errorf("certificate name %q must be a plain file name", name)
	case kind == Node && len(hosts) == 0:
		return f, errors.New("a node certificate needs the names or addresses the node is reached at")
	case kind == Client && len(hosts) > 0:
		return f, errors.New("a client certificate names no hosts")
	}
	if err := checkNew(f); err != nil {
		return f, err
	}
	caCert, caKey, err := load(ca)
	if err != nil {
		return f, fmt.Errorf("the CA: %w", err)
	}
	key, tmpl, err := newTemplate(name, validity)
	if err != nil {
		return f, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	if kind == Node {
		// Members call each other with their own certificate, so it must
		// allow client use as well as server use.
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	return f, write(f, der, key)
}

// newTemplate makes a key and the template of a certificate for it named
// name: a random 128-bit serial, valid from an hour ago (clocks differ)
// for validity.
func newTemplate(name string, validity time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	return key, &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity)}, nil
}

func checkNew(f Files) error {
	for _, p := range []string{f.Cert, f.Key} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%w: %s (remove it first to make a new one)", ErrExists, p)
		}
	}
	return nil
}

// write writes the certificate and then the key, the key readable by its
// owner only; neither replaces an existing file.
func write(f Files, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	if err := writeNew(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		_ = os.Remove(f.Key)
		return err
	}
	return nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return err
	}
	if _, err := fh.Write(b); err != nil {
		_ = fh.Close()
		_ = os.Remove(path)
		return err
	}
	return fh.Close()
}

// load reads a CA certificate and its key.
func load(ca Files) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(ca.Cert)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", ca.Cert)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s is not the key of %s", ca.Key, ca.Cert)
	}
	return cert, key, nil
}
