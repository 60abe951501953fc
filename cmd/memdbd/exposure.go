package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Secure by default, as Redis's protected mode: a member whose ports are
// on loopback only needs nothing (make cluster, a laptop); a port that
// other machines can reach must be protected, or the operator must say
// --insecure, which is logged as a warning at every start.
//
//   - The Raft port carries the replicated log and the members' peer
//     service: beyond loopback it needs mutual TLS with the peer CA
//     (--peer-tls-*). Without it anyone who reaches it can send Raft
//     messages.
//   - The gRPC port beyond loopback needs TLS with client certificates
//     (--tls-cert-file, --tls-key-file, --tls-ca-file, --tls-client-auth):
//     the only authentication a member has so far.
//   - The admin HTTP port (metrics, pprof) shares the gRPC port's TLS:
//     beyond loopback it needs the same (its health endpoints stay open,
//     pprof and metrics need a client certificate; see newAdmin).

// exposure is one port reachable beyond loopback and what it lacks.
type exposure struct {
	flag, addr, lacks string
}

// exposures lists the ports this configuration binds beyond loopback
// without the protection they need.
func (c *config) exposures(resolve func(ctx context.Context, host string) ([]net.IP, error)) []exposure {
	var out []exposure
	peerTLS := c.peerTLSCertFile != "" && c.peerTLSKeyFile != "" && c.peerTLSCAFile != ""
	if !isLoopback(c.raftAddr, resolve) && !peerTLS {
		out = append(out, exposure{"--raft-addr", c.raftAddr, "mutual TLS (--peer-tls-cert-file, --peer-tls-key-file, --peer-tls-ca-file)"})
	}
	clientAuth := c.tlsCertFile != "" && c.tlsClientAuth
	if !isLoopback(c.clientAddr, resolve) && !clientAuth {
		out = append(out, exposure{"--client-addr", c.clientAddr, "TLS with client certificates (--tls-cert-file, --tls-key-file, --tls-ca-file, --tls-client-auth)"})
	}
	if c.adminAddr != "" && !isLoopback(c.adminAddr, resolve) && !clientAuth {
		out = append(out, exposure{"--admin-addr", c.adminAddr, "TLS with client certificates (the gRPC port's --tls-* flags, which the admin port shares)"})
	}
	return out
}

// checkExposure refuses a configuration that exposes a port beyond
// loopback without its protection, unless --insecure; with --insecure it
// logs what is exposed.
func (c *config) checkExposure(lg *slog.Logger) error {
	exp := c.exposures(func(ctx context.Context, host string) ([]net.IP, error) {
		return net.DefaultResolver.LookupIP(ctx, "ip", host)
	})
	if len(exp) == 0 {
		return nil
	}
	var lines []string
	for _, e := range exp {
		lines = append(lines, fmt.Sprintf("%s %s is reachable beyond loopback without %s", e.flag, e.addr, e.lacks))
	}
	if c.insecure {
		for _, e := range exp {
			lg.Warn("--insecure: a port is open to anyone who can reach it", "flag", e.flag, "addr", e.addr, "missing", e.lacks)
		}
		return nil
	}
	return fmt.Errorf("refusing to start: %s. Bind these ports to 127.0.0.1, configure what they lack, or start with --insecure to serve them unprotected on a network you trust",
		strings.Join(lines, "; "))
}

// isLoopback reports whether a listen address is reachable only from this
// machine: an IP on loopback, or a name that resolves to loopback IPs
// only. An empty host (all interfaces) is not; a name that does not
// resolve is not either, so that a refusal errs on the safe side.
func isLoopback(addr string, resolve func(ctx context.Context, host string) ([]net.IP, error)) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := resolve(ctx, host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}
