package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcerts"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

// BenchmarkAccessControlGet is the cost of access control on a stale Get
// (the cheapest call, where it weighs most): one member serving TLS, a
// real gRPC connection over loopback, 16 connections of parallel
// callers, in alternating rounds: access control off (the baseline,
// measured in the same run; the caller presents its certificate), on
// with the caller identified by its client certificate, and on with the
// caller identified by password (a bearer token in every call's
// metadata). Compare ns/op. BenchmarkAccessControlGetPlaintext is the
// same without TLS (off, and on by password), where a call costs less and
// the credentials weigh more.
func BenchmarkAccessControlGet(b *testing.B) { benchAccessControl(b, true) }

func BenchmarkAccessControlGetPlaintext(b *testing.B) { benchAccessControl(b, false) }

func benchAccessControl(b *testing.B, useTLS bool) {
	dir := b.TempDir()
	ca := testcerts.NewCA(b, dir, "ca")
	member, readerCert := ca.Issue(b, "member"), ca.Issue(b, "reader")
	serverPair, err := tls.LoadX509KeyPair(member.Cert, member.Key)
	if err != nil {
		b.Fatal(err)
	}
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cl := testcluster.Start(b, 1, testcluster.Options{TuneServer: func(c *server.Config) {
		if useTLS {
			c.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
		}
	}})
	addr := cl.Members[0].Addr
	// Bounds the whole benchmark, its calibration runs included.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	transport := func(cert *testcerts.Files) grpc.DialOption {
		if !useTLS {
			return grpc.WithTransportCredentials(insecure.NewCredentials())
		}
		c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if cert != nil {
			kp, err := tls.LoadX509KeyPair(cert.Cert, cert.Key)
			if err != nil {
				b.Fatal(err)
			}
			c.Certificates = []tls.Certificate{kp}
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(c))
	}
	setup, err := grpc.NewClient(addr, transport(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer setup.Close()
	if _, err := pb.NewSchemaServiceClient(setup).CreateTable(ctx, &pb.CreateTableRequest{Schema: &pb.TableSchema{
		Name: "kv", PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}}}}); err != nil {
		b.Fatal(err)
	}
	if _, err := pb.NewDataServiceClient(setup).Upsert(ctx, &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("a")}}); err != nil {
		b.Fatal(err)
	}
	const password = "bench-password"
	admin := pb.NewAuthServiceClient(setup)
	for _, step := range []func() error{
		func() error {
			_, err := admin.UserAdd(ctx, &pb.UserAddRequest{Name: "root", Password: password})
			return err
		},
		func() error {
			_, err := admin.UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error { _, err := admin.RoleAdd(ctx, &pb.RoleAddRequest{Name: "r"}); return err },
		func() error {
			_, err := admin.RoleGrant(ctx, &pb.RoleGrantRequest{Role: "r", Permission: &pb.Permission{Action: "read", Table: "kv"}})
			return err
		},
		func() error {
			_, err := admin.UserAdd(ctx, &pb.UserAddRequest{Name: "reader", Password: password})
			return err
		},
		func() error {
			_, err := admin.UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: "reader", Role: "r"})
			return err
		},
	} {
		if err := step(); err != nil {
			b.Fatal(err)
		}
	}
	root := client.Credentials{User: "root", Password: password}.PerRPC()
	rootConn, err := grpc.NewClient(addr, transport(nil), grpc.WithPerRPCCredentials(root))
	if err != nil {
		b.Fatal(err)
	}
	defer rootConn.Close()
	rootAdmin := pb.NewAuthServiceClient(rootConn)

	run := func(b *testing.B, cert *testcerts.Files, creds *client.Credentials) {
		conns := make([]pb.DataServiceClient, 16)
		for i := range conns {
			opts := []grpc.DialOption{transport(cert)}
			if creds != nil {
				opts = append(opts, grpc.WithPerRPCCredentials(creds.PerRPC()))
			}
			cc, err := grpc.NewClient(addr, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			conns[i] = pb.NewDataServiceClient(cc)
		}
		req := &pb.GetRequest{Table: "kv", Key: str("a"), Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}}
		var next atomic.Int64
		b.SetParallelism(4) // 8 callers on two cores, over 16 connections
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := conns[int(next.Add(1))%len(conns)]
			for pb.Next() {
				if r, err := c.Get(ctx, req); err != nil || !r.Found {
					b.Errorf("get: %v", err)
					return
				}
			}
		})
	}
	// Alternating rounds, so that a noisy neighbour hits both.
	for round := 0; round < 3; round++ {
		if _, err := rootAdmin.AuthDisable(ctx, &pb.AuthDisableRequest{}); err != nil {
			b.Fatal(err)
		}
		b.Run("off", func(b *testing.B) { run(b, &readerCert, nil) })
		if _, err := rootAdmin.AuthEnable(ctx, &pb.AuthEnableRequest{}); err != nil {
			b.Fatal(err)
		}
		if useTLS {
			b.Run("on-certificate", func(b *testing.B) { run(b, &readerCert, nil) })
		}
		b.Run("on-password", func(b *testing.B) { run(b, nil, &client.Credentials{User: "reader", Password: password}) })
	}
}
