package main

import (
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
//
// Use one CA for the gRPC port (--tls-ca-file) and another for the Raft
// port (--peer-tls-ca-file), so that a client certificate never opens the
// Raft port: `-name peer-ca` for the second.
func cmdCert(args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: memdbd cert create-ca|create-node|create-client [flags]; memdbd cert <command> -h for its flags")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	sub, args := args[0], args[1:]
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
