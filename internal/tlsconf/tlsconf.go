// Package tlsconf builds the TLS configurations of memdbd's listeners and
// dialers from PEM files: the client port (TLS, optionally mutual) and
// the Raft port (always mutual).
//
// Certificates can be replaced without a restart: a KeyPair re-reads its
// files on Reload, and the configurations built here ask it for the
// current pair at every handshake, so a rotated certificate is used by the
// next connection while open ones keep the one they agreed on. Trusted
// CAs are read once, at start.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// KeyPair is a certificate and its private key, loaded from PEM files and
// reloadable.
type KeyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadKeyPair reads a certificate (chain) and its key.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("a certificate needs both its certificate file and its key file")
	}
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload reads the files again. On an error the pair in use stays.
func (k *KeyPair) Reload() error {
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("loading certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	k.cur.Store(&c)
	return nil
}

// Leaf is the current certificate, parsed.
func (k *KeyPair) Leaf() *x509.Certificate { return k.cur.Load().Leaf }

func (k *KeyPair) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

func (k *KeyPair) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// LoadCAs reads a PEM bundle of trusted CA certificates.
func LoadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// Server is the configuration of a TLS listener presenting kp. With
// clientCAs, a client certificate signed by one of them is verified when
// given, and required when requireClient is set.
func Server(kp *KeyPair, clientCAs *x509.CertPool, requireClient bool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.serverCert, ClientCAs: clientCAs}
	switch {
	case clientCAs != nil && requireClient:
		c.ClientAuth = tls.RequireAndVerifyClientCert
	case clientCAs != nil:
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// Client is the configuration of a TLS dialer that verifies servers
// against roots (the system's when nil) and presents kp when the server
// asks for a certificate (none when kp is nil).
func Client(kp *KeyPair, roots *x509.CertPool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if kp != nil {
		c.GetClientCertificate = kp.clientCert
	}
	return c
}

// ClientFromFiles is Client from PEM files: the CA bundle servers are
// verified against (the system's roots when empty) and a client
// certificate and key (none when both are empty). Errors name the flag
// behind the file, as the command-line tools call them.
func ClientFromFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	var kp *KeyPair
	if certFile != "" || keyFile != "" {
		var err error
		if kp, err = LoadKeyPair(certFile, keyFile); err != nil {
			return nil, fmt.Errorf("-tls-cert-file: %w", err)
		}
	}
	var cas *x509.CertPool
	if caFile != "" {
		var err error
		if cas, err = LoadCAs(caFile); err != nil {
			return nil, fmt.Errorf("-tls-ca-file: %w", err)
		}
	}
	return Client(kp, cas), nil
}
