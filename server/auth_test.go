package server_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

// syncBuffer collects every member's logs, to check that no secret is
// ever written to one.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialAs connects to addr as user (anonymous when user is "").
func dialAs(t *testing.T, addr, user, password string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if user != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(client.Credentials{User: user, Password: password}.PerRPC()))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// wantRefused checks a refusal's code, reason and, for PERMISSION_DENIED,
// the permission named.
func wantRefused(t *testing.T, what string, err error, code codes.Code, perm string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if perm != "" && info.Metadata[pb.MetaPermission] != perm {
				t.Fatalf("%s: permission %q named, want %q (%v)", what, info.Metadata[pb.MetaPermission], perm, err)
			}
			return
		}
	}
	t.Fatalf("%s: no ErrorInfo in %v", what, err)
}

const (
	rootPW  = "root-password-1"
	alicePW = "alice-password-1"
	bobPW   = "bob-password-12"
)

// authCluster is a 3-member cluster with tables a and b, access control
// on, root (root role), alice (reader of a) and bob (writer of b).
func authCluster(t *testing.T, logs io.Writer) *testcluster.Cluster {
	t.Helper()
	cl := testcluster.Start(t, 3, testcluster.Options{TuneServer: func(c *server.Config) {
		if logs != nil {
			c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}})
	cc := dial(t, cl.Members[cl.Leader()].Addr)
	admin := pb.NewAuthServiceClient(cc)
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.AuthEnable(ctx, &pb.AuthEnableRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("enable with no root user: %v, want FailedPrecondition", err)
	}
	createKV(t, cc, "a")
	createKV(t, cc, "b")
	steps := []func() error{
		func() error {
			_, err := admin.UserAdd(ctx, &pb.UserAddRequest{Name: "root", Password: rootPW})
			return err
		},
		func() error {
			_, err := admin.UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error { _, err := admin.RoleAdd(ctx, &pb.RoleAddRequest{Name: "reader-a"}); return err },
		func() error {
			_, err := admin.RoleGrant(ctx, &pb.RoleGrantRequest{Role: "reader-a", Permission: &pb.Permission{Action: "read", Table: "a"}})
			return err
		},
		func() error { _, err := admin.RoleAdd(ctx, &pb.RoleAddRequest{Name: "writer-b"}); return err },
		func() error {
			_, err := admin.RoleGrant(ctx, &pb.RoleGrantRequest{Role: "writer-b", Permission: &pb.Permission{Action: "write", Table: "b"}})
			return err
		},
		func() error {
			_, err := admin.UserAdd(ctx, &pb.UserAddRequest{Name: "alice", Password: alicePW})
			return err
		},
		func() error {
			_, err := admin.UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: "alice", Role: "reader-a"})
			return err
		},
		func() error {
			_, err := admin.UserAdd(ctx, &pb.UserAddRequest{Name: "bob", Password: bobPW})
			return err
		},
		func() error {
			_, err := admin.UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: "bob", Role: "writer-b"})
			return err
		},
		func() error { _, err := admin.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("setup step %d: %v", i, err)
		}
	}
	// Every member applies the change before the test goes on.
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range cl.Members {
		for !m.Node.FSM().Auth().Enabled {
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw access control on", m.NodeCfg.ID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return cl
}

func upsert(table, key string) *pb.UpsertRequest {
	return &pb.UpsertRequest{Table: table, Fields: map[string]*pb.Value{"k": str(key)}}
}

// Who may do what, on the leader and through a follower, and that a
// refusal changes nothing.
func TestAccessControlEnforced(t *testing.T) {
	logs := &syncBuffer{}
	cl := authCluster(t, logs)
	li := cl.Leader()
	fi := (li + 1) % 3
	leaderAddr, followerAddr := cl.Members[li].Addr, cl.Members[fi].Addr
	ctx := ctxT(t, 60*time.Second)

	anon := pb.NewDataServiceClient(dialAs(t, leaderAddr, "", ""))
	_, err := anon.Get(ctx, &pb.GetRequest{Table: "a", Key: str("x")})
	wantRefused(t, "anonymous Get", err, codes.Unauthenticated, "")
	_, err = pb.NewDataServiceClient(dialAs(t, leaderAddr, "alice", "wrong-password")).Get(ctx, &pb.GetRequest{Table: "a", Key: str("x")})
	wantRefused(t, "wrong password", err, codes.Unauthenticated, "")

	root := pb.NewDataServiceClient(dialAs(t, leaderAddr, "root", rootPW))
	if _, err := root.Upsert(ctx, upsert("a", "seed")); err != nil {
		t.Fatalf("root writes a: %v", err)
	}
	for _, addr := range []string{leaderAddr, followerAddr} {
		alice := pb.NewDataServiceClient(dialAs(t, addr, "alice", alicePW))
		if r, err := alice.Get(ctx, &pb.GetRequest{Table: "a", Key: str("seed")}); err != nil || !r.Found {
			t.Fatalf("alice reads a on %s: %v %v", addr, r, err)
		}
		_, err = alice.Upsert(ctx, upsert("a", "alice-was-here"))
		wantRefused(t, "alice writes a", err, codes.PermissionDenied, "write:a")
		_, err = alice.Get(ctx, &pb.GetRequest{Table: "b", Key: str("x")})
		wantRefused(t, "alice reads b", err, codes.PermissionDenied, "read:b")

		bob := pb.NewDataServiceClient(dialAs(t, addr, "bob", bobPW))
		if _, err := bob.Upsert(ctx, upsert("b", "bob-"+addr)); err != nil {
			t.Fatalf("bob writes b through %s: %v", addr, err)
		}
		_, err = bob.Get(ctx, &pb.GetRequest{Table: "b", Key: str("x")})
		wantRefused(t, "bob reads b", err, codes.PermissionDenied, "read:b")
		// A transaction needs every table it touches.
		_, err = bob.Txn(ctx, &pb.TxnRequest{Then: []*pb.Op{
			{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "b", Fields: map[string]*pb.Value{"k": str("t")}}}},
			{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "a", Key: str("seed")}}},
		}})
		wantRefused(t, "bob's transaction on a and b", err, codes.PermissionDenied, "write:a")

		// Schema and cluster calls.
		_, err = pb.NewSchemaServiceClient(dialAs(t, addr, "bob", bobPW)).DropTable(ctx, &pb.DropTableRequest{Table: "b"})
		wantRefused(t, "bob drops b", err, codes.PermissionDenied, "schema:b")
		_, err = pb.NewClusterServiceClient(dialAs(t, addr, "alice", alicePW)).Status(ctx, &pb.StatusRequest{})
		wantRefused(t, "alice's Status", err, codes.PermissionDenied, "cluster.read")
		_, err = pb.NewClusterServiceClient(dialAs(t, addr, "bob", bobPW)).RemoveMember(ctx, &pb.RemoveMemberRequest{NodeId: cl.Members[li].NodeCfg.ID})
		wantRefused(t, "bob removes the leader", err, codes.PermissionDenied, "cluster.admin")
		_, err = pb.NewClusterServiceClient(dialAs(t, addr, "", "")).TransferLeadership(ctx, &pb.TransferLeadershipRequest{})
		wantRefused(t, "anonymous transfer", err, codes.Unauthenticated, "")
		_, err = pb.NewAuthServiceClient(dialAs(t, addr, "alice", alicePW)).UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: "alice", Role: "root"})
		wantRefused(t, "alice makes herself root", err, codes.PermissionDenied, "cluster.admin")
		if _, err := pb.NewClusterServiceClient(dialAs(t, addr, "root", rootPW)).Status(ctx, &pb.StatusRequest{}); err != nil {
			t.Fatalf("root's Status on %s: %v", addr, err)
		}

		// ListTables shows what the caller may use.
		lt, err := pb.NewSchemaServiceClient(dialAs(t, addr, "alice", alicePW)).ListTables(ctx, &pb.ListTablesRequest{})
		if err != nil || len(lt.Tables) != 1 || lt.Tables[0].Schema.Name != "a" {
			t.Fatalf("alice's ListTables: %v %v", lt, err)
		}
		who, err := pb.NewAuthServiceClient(dialAs(t, addr, "bob", bobPW)).WhoAmI(ctx, &pb.WhoAmIRequest{})
		if err != nil || who.User != "bob" || who.Method != "token" || !who.AuthEnabled || strings.Join(who.Roles, ",") != "writer-b" {
			t.Fatalf("bob's WhoAmI: %v %v", who, err)
		}
	}
	// Reflection (grpcurl) serves any identified caller, not an
	// anonymous one.
	for _, tc := range []struct {
		user, pw string
		want     codes.Code
	}{{"", "", codes.Unauthenticated}, {"alice", alicePW, codes.OK}} {
		stream, err := rpb.NewServerReflectionClient(dialAs(t, leaderAddr, tc.user, tc.pw)).ServerReflectionInfo(ctx)
		if err == nil {
			err = stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
		}
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != tc.want {
			t.Fatalf("reflection as %q: %v, want %v", tc.user, err, tc.want)
		}
	}

	// Nothing refused changed the state.
	if r, err := root.Get(ctx, &pb.GetRequest{Table: "a", Key: str("alice-was-here")}); err != nil || r.Found {
		t.Fatalf("a refused write took effect: %v %v", r, err)
	}
	if r, err := root.Get(ctx, &pb.GetRequest{Table: "a", Key: str("seed")}); err != nil || !r.Found {
		t.Fatalf("a refused delete took effect: %v %v", r, err)
	}
	if _, err := pb.NewSchemaServiceClient(dialAs(t, leaderAddr, "root", rootPW)).DescribeTable(ctx, &pb.DescribeTableRequest{Table: "b"}); err != nil {
		t.Fatalf("a refused drop took effect: %v", err)
	}

	// The leader authorizes a forwarded proposal for the client it names,
	// not for the member that forwards it: a member claiming to forward
	// alice's write to a is refused.
	peer := cmdpb.NewPeerServiceClient(dial(t, cl.Members[li].NodeCfg.RaftBind))
	_, err = peer.Propose(ctx, &cmdpb.ProposeRequest{From: cl.Members[fi].NodeCfg.ID, Caller: &cmdpb.Identity{User: "alice", Method: "token"},
		Envelope: &cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: []*pb.Op{{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "a", Fields: map[string]*pb.Value{"k": str("forged")}}}}}}}}})
	wantRefused(t, "a proposal forwarded for alice", err, codes.PermissionDenied, "write:a")

	// Backups leave the password hashes behind; Raft's own snapshots keep
	// them.
	stream, err := pb.NewClusterServiceClient(dialAs(t, leaderAddr, "root", rootPW)).Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var backup []byte
	var size uint64
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("backup: %v", err)
		}
		if chunk.Size > 0 {
			size = chunk.Size
		}
		backup = append(backup, chunk.Data...)
	}
	if uint64(len(backup)) != size || size == 0 {
		t.Fatalf("backup of %d bytes announced %d", len(backup), size)
	}
	if bytes.Contains(backup, []byte("$2a$")) || bytes.Contains(backup, []byte("reader-a")) {
		t.Fatal("the backup holds access-control state")
	}

	// No password in any log line.
	for _, pw := range []string{rootPW, alicePW, bobPW, "wrong-password"} {
		if strings.Contains(logs.String(), pw) {
			t.Fatalf("a password appears in the logs")
		}
	}
	if !strings.Contains(logs.String(), "authentication failed") {
		t.Fatal("the failed authentication is not in the audit log")
	}
}

// A permission revoked while a watch is open ends it with
// PermissionDenied; a role granted is usable on every member within a
// second.
func TestAccessControlChangesApplyLive(t *testing.T) {
	cl := authCluster(t, nil)
	li := cl.Leader()
	ctx := ctxT(t, 60*time.Second)
	admin := pb.NewAuthServiceClient(dialAs(t, cl.Members[li].Addr, "root", rootPW))

	// Grant alice write on a; every member lets her write within 1s.
	if _, err := admin.RoleGrant(ctx, &pb.RoleGrantRequest{Role: "reader-a", Permission: &pb.Permission{Action: "write", Table: "a"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, m := range cl.Members {
		alice := pb.NewDataServiceClient(dialAs(t, m.Addr, "alice", alicePW))
		for {
			_, err := alice.Upsert(ctx, upsert("a", m.NodeCfg.ID))
			if err == nil {
				break
			}
			if status.Code(err) != codes.PermissionDenied || time.Since(start) > time.Second {
				t.Fatalf("member %d: alice's write a second after the grant: %v", i, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// A watch on a, on a follower; revoking alice's role ends it.
	fi := (li + 1) % 3
	w, err := pb.NewDataServiceClient(dialAs(t, cl.Members[fi].Addr, "alice", alicePW)).Watch(ctx, &pb.WatchRequest{Table: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the watch is established
		t.Fatalf("watch: %v", err)
	}
	if _, err := admin.UserRevokeRole(ctx, &pb.UserRevokeRoleRequest{User: "alice", Role: "reader-a"}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := w.Recv()
		if err == nil {
			continue
		}
		wantRefused(t, "the watch after the revocation", err, codes.PermissionDenied, "read:a")
		break
	}
	// And a new watch is refused at once.
	w2, err := pb.NewDataServiceClient(dialAs(t, cl.Members[fi].Addr, "alice", alicePW)).Watch(ctx, &pb.WatchRequest{Table: "a"})
	if err == nil {
		_, err = w2.Recv()
	}
	wantRefused(t, "a new watch without the permission", err, codes.PermissionDenied, "read:a")
}

// Failed authentications are limited per source: guessing gets refused
// before the member spends a password check on it.
func TestAuthenticationFailuresLimited(t *testing.T) {
	cl := authCluster(t, nil)
	// A user that does not exist: no password check at all (bcrypt is
	// slow under the race detector), but a failure like any other.
	data := pb.NewDataServiceClient(dialAs(t, cl.Members[0].Addr, "mallory", "a-guessed-password"))
	ctx := ctxT(t, 30*time.Second)
	limited := false
	for i := 0; i < 40 && !limited; i++ {
		_, err := data.Get(ctx, &pb.GetRequest{Table: "a", Key: str("x")})
		switch status.Code(err) {
		case codes.Unauthenticated:
		case codes.ResourceExhausted:
			limited = true
		default:
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if !limited {
		t.Fatal("40 wrong passwords in a row were all checked")
	}
	// The right password from elsewhere (another user) still works.
	if _, err := pb.NewDataServiceClient(dialAs(t, cl.Members[1].Addr, "alice", alicePW)).Get(ctx, &pb.GetRequest{Table: "a", Key: str("x")}); err != nil {
		t.Fatalf("alice on another member: %v", err)
	}
}

// The SDK's Credentials identify it; without them the same call is
// refused with the SDK's sentinel.
func TestSDKCredentials(t *testing.T) {
	cl := authCluster(t, nil)
	ctx := ctxT(t, 30*time.Second)
	newClient := func(cr *client.Credentials) *client.Client {
		c, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints(), Credentials: cr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	bob := newClient(&client.Credentials{User: "bob", Password: bobPW})
	if _, err := bob.Upsert(ctx, "b", client.Fields{"k": client.String("sdk")}); err != nil {
		t.Fatalf("bob's SDK write: %v", err)
	}
	if _, err := bob.Get(ctx, "b", client.String("sdk")); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("bob's SDK read: %v, want ErrPermissionDenied", err)
	}
	if _, err := newClient(nil).Get(ctx, "a", client.String("x")); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("anonymous SDK read: %v, want ErrUnauthenticated", err)
	}
}
