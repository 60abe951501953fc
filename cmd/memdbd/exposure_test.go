package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// fakeResolver resolves a few names, as DNS would.
func fakeResolver(_ context.Context, host string) ([]net.IP, error) {
	switch host {
	case "local.test":
		return []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, nil
	case "n1.test":
		return []net.IP{net.IPv4(10, 0, 0, 1)}, nil
	case "mixed.test":
		return []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)}, nil
	}
	return nil, errors.New("no such host")
}

// Which ports a configuration exposes without the protection they need.
func TestExposures(t *testing.T) {
	peerTLS := []string{"--peer-tls-cert-file", "p.pem", "--peer-tls-key-file", "p.key", "--peer-tls-ca-file", "ca.pem"}
	clientTLS := []string{"--tls-cert-file", "c.pem", "--tls-key-file", "c.key", "--tls-ca-file", "ca.pem", "--tls-client-auth"}
	for _, tc := range []struct {
		name string
		args []string
		want string // flags of the exposed ports, comma-separated
	}{
		{"defaults: loopback", nil, ""},
		{"all on loopback names", []string{"--client-addr", "localhost:7000", "--raft-addr", "local.test:7100", "--admin-addr", "[::1]:7200"}, ""},
		{"client port on all interfaces", []string{"--client-addr", ":7000"}, "--client-addr"},
		{"client port on a LAN IP", []string{"--client-addr", "10.0.0.1:7000"}, "--client-addr"},
		{"client TLS without client certificates is not enough", []string{"--client-addr", "0.0.0.0:7000",
			"--tls-cert-file", "c.pem", "--tls-key-file", "c.key"}, "--client-addr"},
		{"client port with mutual TLS", append([]string{"--client-addr", "0.0.0.0:7000"}, clientTLS...), ""},
		{"raft port on a name of another machine", []string{"--raft-addr", "n1.test:7100"}, "--raft-addr"},
		{"raft port on a name that is partly loopback", []string{"--raft-addr", "mixed.test:7100"}, "--raft-addr"},
		{"raft port on a name that does not resolve", []string{"--raft-addr", "nowhere.test:7100"}, "--raft-addr"},
		{"raft port with peer TLS", append([]string{"--raft-addr", "10.0.0.1:7100"}, peerTLS...), ""},
		{"admin port beyond loopback", []string{"--admin-addr", "0.0.0.0:7200"}, "--admin-addr"},
		{"admin port with the gRPC port's mutual TLS", append([]string{"--admin-addr", "0.0.0.0:7200", "--client-addr", "0.0.0.0:7000"}, clientTLS...), ""},
		{"everything exposed", []string{"--client-addr", ":7000", "--raft-addr", ":7100", "--admin-addr", ":7200"}, "--raft-addr,--client-addr,--admin-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(append([]string{"--node-id", "n1", "--data-dir", t.TempDir()}, tc.args...), env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range c.exposures(fakeResolver) {
				got = append(got, e.flag)
			}
			if g := strings.Join(got, ","); g != tc.want {
				t.Fatalf("exposed %q, want %q", g, tc.want)
			}
		})
	}
}

// An exposed port is refused with a message naming the flag and what it
// lacks; --insecure starts, with a warning at every start.
func TestInsecureIsExplicit(t *testing.T) {
	c, err := parseConfig([]string{"--node-id", "n1", "--data-dir", t.TempDir(), "--client-addr", "0.0.0.0:0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, nil))
	err = c.checkExposure(lg)
	if err == nil || !strings.Contains(err.Error(), "--client-addr 0.0.0.0:0") || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("an exposed client port: %v", err)
	}
	c, err = parseConfig([]string{"--node-id", "n1", "--data-dir", t.TempDir(), "--client-addr", "0.0.0.0:0"},
		env(map[string]string{"MEMDBD_INSECURE": "true"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.checkExposure(lg); err != nil {
		t.Fatalf("with --insecure: %v", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "--client-addr") {
		t.Fatalf("with --insecure, no warning naming the port: %s", logs.String())
	}
}
