package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/memdbd/memdbd/internal/certs"
)

// cmdCert makes the certificates a secure deployment needs (internal/certs):
//
//	memdbd cert create-ca     -dir certs
//	memdbd cert create-node   -dir certs -name n1 -hosts n1.example,10.0.0.1
//	memdbd cert create-client -dir certs -name app
//	memdbd cert create-cluster -dir certs -nodes n1,n2,n3 -clients app
//
// Use one CA for the gRPC port (--tls-ca-file) and another for the Raft
// port (--peer-tls-ca-file), so that a client certificate never opens the
// Raft port: `-name peer-ca` for the second.
func cmdCert(args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: memdbd cert create-ca|create-node|create-client|create-cluster [flags]; memdbd cert <command> -h for its flags")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	sub, args := args[0], args[1:]
	if sub == "create-cluster" {
		return cmdCertCluster(args, stdout, stderr)
	}
	fs := flag.NewFlagSet("cert "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "certs", "directory of the files (the CA's and the new ones)")
	var name, caName, hosts *string
	var days *int
	switch sub {
	case "create-ca":
		name = fs.String("name", "ca", "the CA's name: its common name and file stem (<dir>/<name>.pem, <dir>/<name>-key.pem)")
		days = fs.Int("days", 3650, "days the CA is valid")
	case "create-node", "create-client":
		name = fs.String("name", "", "the certificate's common name and file stem (required)")
		caName = fs.String("ca", "ca", "file stem of the CA in -dir that signs it")
		days = fs.Int("days", 825, "days the certificate is valid (at most the CA's)")
		if sub == "create-node" {
			hosts = fs.String("hosts", "", "comma-separated DNS names and IP addresses the member is reached at: the hosts of its --client-advertise and --raft-advertise (required)")
		}
	default:
		return usage()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	validity := time.Duration(*days) * 24 * time.Hour
	if *days < 1 {
		fmt.Fprintln(stderr, "memdbd cert: -days must be at least 1")
		return 2
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "memdbd cert %s: %v\n", sub, err)
		return 1
	}
	var f certs.Files
	var err error
	switch sub {
	case "create-ca":
		f, err = certs.CreateCA(*dir, *name, validity)
	default:
		ca := certs.Files{Cert: filepath.Join(*dir, *caName+".pem"), Key: filepath.Join(*dir, *caName+"-key.pem")}
		kind, hs := certs.Client, []string(nil)
		if sub == "create-node" {
			kind = certs.Node
			for _, h := range strings.Split(*hosts, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hs = append(hs, h)
				}
			}
		}
		f, err = certs.Create(*dir, ca, kind, *name, hs, validity)
	}
	if err != nil {
		fmt.Fprintf(stderr, "memdbd cert %s: %v\n", sub, err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", f.Cert, f.Key)
	return 0
}

// cmdCertCluster makes every certificate a cluster needs in one step, and
// only those missing, so that it can run as the init step of a deployment
// (deploy/docker) at every start: a CA for the gRPC port (ca) and one for
// the Raft port (peer-ca); per node, <node>.pem for the gRPC port and
// <node>-peer.pem for the Raft port, valid for the node's name and the
// extra hosts; and the client certificates asked for. Each member's
// certificate names the member, so that each can be replaced alone.
func cmdCertCluster(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cert create-cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "certs", "directory of the files")
	nodes := fs.String("nodes", "", "comma-separated node names, each also a DNS name it is reached at (required)")
	hosts := fs.String("hosts", "localhost,127.0.0.1", "comma-separated names and addresses every node certificate names besides its node's")
	clients := fs.String("clients", "", "comma-separated client certificate names (their users)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	split := func(s string) []string {
		var out []string
		for _, x := range strings.Split(s, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
		return out
	}
	if len(split(*nodes)) == 0 {
		fmt.Fprintln(stderr, "memdbd cert create-cluster: -nodes is required")
		return 2
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(stderr, "memdbd cert create-cluster:", err)
		return 1
	}
	ca := func(name string) certs.Files {
		return certs.Files{Cert: filepath.Join(*dir, name+".pem"), Key: filepath.Join(*dir, name+"-key.pem")}
	}
	made := 0
	step := func(f certs.Files, err error) bool {
		switch {
		case errors.Is(err, certs.ErrExists):
			return true
		case err != nil:
			fmt.Fprintln(stderr, "memdbd cert create-cluster:", err)
			return false
		}
		made++
		fmt.Fprintf(stdout, "wrote %s and %s\n", f.Cert, f.Key)
		return true
	}
	const caValidity, validity = 3650 * 24 * time.Hour, 825 * 24 * time.Hour
	ok := step(certs.CreateCA(*dir, "ca", caValidity)) && step(certs.CreateCA(*dir, "peer-ca", caValidity))
	for _, n := range split(*nodes) {
		hs := append([]string{n}, split(*hosts)...)
		ok = ok && step(certs.Create(*dir, ca("ca"), certs.Node, n, hs, validity)) &&
			step(certs.Create(*dir, ca("peer-ca"), certs.Node, n+"-peer", hs, validity))
	}
	for _, c := range split(*clients) {
		ok = ok && step(certs.Create(*dir, ca("ca"), certs.Client, c, nil, validity))
	}
	if !ok {
		return 1
	}
	if made == 0 {
		fmt.Fprintf(stdout, "every certificate is in %s already\n", *dir)
	}
	return 0
}
