package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcerts"
)

// The access-control matrix, on real processes over TLS: identities (a
// reader of table a by certificate, a writer of table b by password, a
// schema administrator, a cluster administrator by certificate, an
// anonymous caller, a certificate of a foreign CA) times every RPC and
// stream, each through the leader and through a follower; every answer is
// the allowed one or the exact refusal, and no refusal changes the state.
// Users and roles are made with the memdbd CLI, the first root user by
// --bootstrap-root-password-file.
func TestAccessControlMatrix(t *testing.T) {
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	for _, args := range [][]string{
		{"create-ca", "-name", "ca"},
		{"create-ca", "-name", "other"},
		{"create-node", "-name", "member", "-hosts", "127.0.0.1,localhost"},
		{"create-client", "-name", "root"},
		{"create-client", "-name", "reader"},
		{"create-client", "-name", "ops"},
		{"create-client", "-name", "stranger", "-ca", "other"},
	} {
		if out, err := exec.Command(memdbdBin, append([]string{"cert"}, append(args, "-dir", dir)...)...).CombinedOutput(); err != nil {
			t.Fatalf("memdbd cert %v: %v\n%s", args, err, out)
		}
	}
	const rootPW = "bootstrap-root-pw"
	if err := os.WriteFile(f("root.pw"), []byte(rootPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certOf := func(name string) *testcerts.Files {
		return &testcerts.Files{Cert: f(name + ".pem"), Key: f(name + "-key.pem")}
	}
	adminPort := freeAddrs(t, 1)[0]
	// The harness identifies as root by certificate: Status needs
	// cluster.read from the first moment.
	c := newClusterWith(t, 3, func(nd *node) {
		if nd.idx == 0 {
			nd.args = append(nd.args, "--admin-addr", adminPort)
		}
	}, credentials.NewTLS(clientTLS(t, f("ca.pem"), certOf("root"))),
		// Client certificates verified when given, not required: the
		// anonymous caller must reach the authorization check.
		"--tls-cert-file", f("member.pem"), "--tls-key-file", f("member-key.pem"), "--tls-ca-file", f("ca.pem"),
		"--bootstrap-root-password-file", f("root.pw"))
	l := c.waitReady(15*time.Second, nil)
	fi := c.others(l)[0]

	// Set up with the CLI, as root by password.
	cli := func(args ...string) string {
		t.Helper()
		full := append(args, "-addr", c.nodes[fi].clientAddr, "-tls-ca-file", f("ca.pem"), "-user", "root", "-password-file", f("root.pw"))
		out, err := exec.Command(memdbdBin, full...).CombinedOutput()
		if err != nil {
			t.Fatalf("memdbd %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	waitFor(t, 15*time.Second, "the bootstrapped root user", func() error {
		cmd := exec.Command(memdbdBin, "auth", "whoami", "-addr", c.nodes[fi].clientAddr, "-tls-ca-file", f("ca.pem"), "-user", "root", "-password-file", f("root.pw"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "access control: true") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	ctx, cancel := c.callCtx(120 * time.Second)
	defer cancel()
	for _, name := range []string{"a", "b"} {
		if _, err := c.schema(l).CreateTable(ctx, &pb.CreateTableRequest{Schema: &pb.TableSchema{Name: name, PrimaryKey: "k",
			Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}}}}); err != nil {
			t.Fatalf("create table %s: %v", name, err)
		}
		if _, err := c.data(l).Upsert(ctx, &pb.UpsertRequest{Table: name, Fields: map[string]*pb.Value{"k": pbString("seed")}}); err != nil {
			t.Fatal(err)
		}
	}
	cli("role", "add", "reader-a")
	cli("role", "grant", "reader-a", "read", "a")
	cli("role", "add", "writer-b")
	cli("role", "grant", "writer-b", "write", "b")
	cli("role", "add", "schemer")
	cli("role", "grant", "schemer", "schema", "-prefix")
	cli("role", "add", "operator")
	cli("role", "grant", "operator", "cluster.admin")
	cli("role", "grant", "operator", "cluster.read")
	cli("user", "add", "reader", "-no-password")
	cli("user", "grant", "reader", "reader-a")
	out := cli("user", "add", "bob")
	bobPW := strings.TrimSpace(out[strings.LastIndex(out, ":")+1:])
	cli("user", "grant", "bob", "writer-b")
	if err := os.WriteFile(f("schemer.pw"), []byte("schemer-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(memdbdBin, "user", "add", "schemer", "-password-stdin", "-addr", c.nodes[l].clientAddr, "-tls-ca-file", f("ca.pem"), "-user", "root", "-password-file", f("root.pw"))
	cmd.Stdin = strings.NewReader("schemer-password\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user add -password-stdin: %v\n%s", err, out)
	}
	cli("user", "grant", "schemer", "schemer")
	cli("user", "add", "ops", "-no-password")
	cli("user", "grant", "ops", "operator")
	if users := cli("user", "list"); !strings.Contains(users, "bob") || strings.Contains(users, bobPW) || strings.Contains(users, "$2a$") {
		t.Fatalf("user list:\n%s", users)
	}

	type ident struct {
		name   string
		cert   *testcerts.Files
		ca     string
		user   string
		pw     string
		allow  map[string]bool
		denied codes.Code
	}
	idents := []ident{
		{name: "reader", cert: certOf("reader"), allow: set("Get", "BatchGet", "Scan", "Count", "Watch", "DescribeTable", "ListTables", "WhoAmI")},
		{name: "bob", user: "bob", pw: bobPW, allow: set("Upsert", "Delete", "Txn", "ListTables", "WhoAmI")},
		{name: "schemer", user: "schemer", pw: "schemer-password", allow: set("CreateTable", "DropTable", "DescribeTable", "ListTables", "WhoAmI")},
		{name: "ops", cert: certOf("ops"), allow: set("Status", "Members", "Join", "Transfer", "Promote", "Remove", "Snapshot", "Backup", "UserList", "ListTables", "WhoAmI")},
		{name: "anonymous", allow: set("WhoAmI"), denied: codes.Unauthenticated},
		// A client offers only a certificate of a CA the member asks
		// for, so a foreign CA's certificate is not sent: the caller is
		// anonymous. (With --tls-client-auth the handshake itself fails:
		// TestMutualTLSOnClientAndRaftPorts.)
		{name: "stranger", cert: certOf("stranger"), allow: set("WhoAmI"), denied: codes.Unauthenticated},
	}
	// Each call, with an argument that an allowed caller gets a harmless
	// answer to (a table or member that does not exist where the call
	// would destroy something).
	type call struct {
		name string
		ok   []codes.Code // answers of an allowed call
		do   func(ctx context.Context, cc *grpc.ClientConn) error
	}
	okOr := func(cs ...codes.Code) []codes.Code { return append([]codes.Code{codes.OK}, cs...) }
	calls := []call{
		{"Get", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).Get(ctx, &pb.GetRequest{Table: "a", Key: pbString("seed")})
			return err
		}},
		{"BatchGet", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).BatchGet(ctx, &pb.BatchGetRequest{Table: "a", Keys: []*pb.Value{pbString("seed")}})
			return err
		}},
		{"Scan", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).Scan(ctx, &pb.ScanRequest{Table: "a"})
			return err
		}},
		{"Count", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).Count(ctx, &pb.CountRequest{Table: "a"})
			return err
		}},
		{"Watch", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			w, err := pb.NewDataServiceClient(cc).Watch(wctx, &pb.WatchRequest{Table: "a", Snapshot: true})
			if err == nil {
				_, err = w.Recv()
			}
			return err
		}},
		{"Upsert", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).Upsert(ctx, &pb.UpsertRequest{Table: "b", Fields: map[string]*pb.Value{"k": pbString("written")}})
			return err
		}},
		{"Delete", okOr(codes.NotFound), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).Delete(ctx, &pb.DeleteRequest{Table: "b", Key: pbString("written")})
			return err
		}},
		{"Txn", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewDataServiceClient(cc).Txn(ctx, &pb.TxnRequest{Then: []*pb.Op{{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "b", Fields: map[string]*pb.Value{"k": pbString("txn")}}}}}})
			return err
		}},
		{"CreateTable", okOr(codes.AlreadyExists), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewSchemaServiceClient(cc).CreateTable(ctx, &pb.CreateTableRequest{Schema: &pb.TableSchema{Name: "made", PrimaryKey: "k",
				Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}}}})
			return err
		}},
		{"DropTable", okOr(codes.NotFound), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewSchemaServiceClient(cc).DropTable(ctx, &pb.DropTableRequest{Table: "no-such-table"})
			return err
		}},
		{"DescribeTable", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewSchemaServiceClient(cc).DescribeTable(ctx, &pb.DescribeTableRequest{Table: "a"})
			return err
		}},
		{"ListTables", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewSchemaServiceClient(cc).ListTables(ctx, &pb.ListTablesRequest{})
			return err
		}},
		{"Status", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).Status(ctx, &pb.StatusRequest{})
			return err
		}},
		{"Members", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).Members(ctx, &pb.MembersRequest{})
			return err
		}},
		{"Join", okOr(codes.InvalidArgument), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).Join(ctx, &pb.JoinRequest{NodeId: "rogue"}) // no raft_addr: invalid if allowed
			return err
		}},
		{"Transfer", okOr(codes.InvalidArgument), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).TransferLeadership(ctx, &pb.TransferLeadershipRequest{ToNodeId: "no-such-member"})
			return err
		}},
		{"Promote", okOr(codes.InvalidArgument), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).PromoteMember(ctx, &pb.PromoteMemberRequest{NodeId: "no-such-member"})
			return err
		}},
		{"Remove", okOr(codes.InvalidArgument), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).RemoveMember(ctx, &pb.RemoveMemberRequest{NodeId: "no-such-member"})
			return err
		}},
		{"Snapshot", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewClusterServiceClient(cc).Snapshot(ctx, &pb.SnapshotRequest{})
			return err
		}},
		{"Backup", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			bctx, cancel := context.WithCancel(ctx)
			defer cancel()
			s, err := pb.NewClusterServiceClient(cc).Backup(bctx, &pb.BackupRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}},
		{"UserList", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewAuthServiceClient(cc).UserList(ctx, &pb.UserListRequest{})
			return err
		}},
		{"WhoAmI", okOr(), func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := pb.NewAuthServiceClient(cc).WhoAmI(ctx, &pb.WhoAmIRequest{})
			return err
		}},
	}

	// What a refusal must not change: every table's rows and the users.
	fingerprint := func() string {
		t.Helper()
		var parts []string
		lt, err := c.schema(l).ListTables(ctx, &pb.ListTablesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range lt.Tables {
			sc, err := c.data(l).Scan(ctx, &pb.ScanRequest{Table: ti.Schema.Name})
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, fmt.Sprintf("%s:%d", ti.Schema.Name, len(sc.Rows)))
			for _, r := range sc.Rows {
				parts = append(parts, fmt.Sprint(r.ModRevision))
			}
		}
		users, err := pb.NewAuthServiceClient(c.conn(l)).UserList(ctx, &pb.UserListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users.Users {
			parts = append(parts, u.Name+"="+strings.Join(u.Roles, ","))
		}
		sort.Strings(parts)
		return strings.Join(parts, " ")
	}

	var matrix []string
	for _, id := range idents {
		tc := clientTLS(t, f("ca.pem"), id.cert)
		opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
		if id.user != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(client.Credentials{User: id.user, Password: id.pw}.PerRPC()))
		}
		row := []string{id.name + ":"}
		for _, member := range []int{l, fi} {
			cc, err := grpc.NewClient(c.nodes[member].clientAddr, opts...)
			if err != nil {
				t.Fatal(err)
			}
			for _, cl := range calls {
				before := ""
				if !id.allow[cl.name] {
					before = fingerprint()
				}
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				err := cl.do(cctx, cc)
				ccancel()
				code := status.Code(err)
				if id.allow[cl.name] {
					if !contains(cl.ok, code) {
						t.Errorf("%s %s on %s: %v, want allowed", id.name, cl.name, c.nodes[member].id, err)
					}
					if member == l {
						row = append(row, cl.name+"=ok")
					}
					continue
				}
				want := id.denied
				if want == codes.OK {
					want = codes.PermissionDenied
				}
				if code != want {
					t.Errorf("%s %s on %s: %v, want %v", id.name, cl.name, c.nodes[member].id, err, want)
				}
				if want == codes.PermissionDenied && !strings.Contains(status.Convert(err).Message(), "needs the permission") {
					t.Errorf("%s %s: the refusal does not name the permission: %v", id.name, cl.name, err)
				}
				if after := fingerprint(); after != before {
					t.Errorf("%s %s on %s was refused but changed the state:\n%s\n%s", id.name, cl.name, c.nodes[member].id, before, after)
				}
				if member == l {
					row = append(row, cl.name+"="+code.String())
				}
			}
			_ = cc.Close()
		}
		matrix = append(matrix, strings.Join(row, " "))
	}
	t.Logf("matrix (leader; the follower gave the same answers):\n%s", strings.Join(matrix, "\n"))

	// The admin port with access control on: pprof needs cluster.admin,
	// /metrics cluster.read; health stays open.
	get := func(path string, cert *testcerts.Files) int {
		t.Helper()
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(t, f("ca.pem"), cert)}}
		resp, err := hc.Get("https://" + adminPort + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path string
		who  string
		want int
	}{
		{"/livez", "", 200},
		{"/debug/pprof/cmdline", "", 401}, {"/metrics", "", 401},
		{"/debug/pprof/cmdline", "reader", 403}, {"/metrics", "reader", 403},
		{"/debug/pprof/cmdline", "ops", 200}, {"/metrics", "ops", 200},
	} {
		var cert *testcerts.Files
		if tc.who != "" {
			cert = certOf(tc.who)
		}
		if got := get(tc.path, cert); got != tc.want {
			t.Errorf("admin %s as %q: %d, want %d", tc.path, tc.who, got, tc.want)
		}
	}

	// A client certificate (not valid for server use) may not join a
	// node, even with access control off.
	cli("auth", "disable")
	rc, err := grpc.NewClient(c.nodes[fi].clientAddr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(t, f("ca.pem"), certOf("reader")))))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = pb.NewClusterServiceClient(rc).Join(ctx, &pb.JoinRequest{NodeId: "rogue", RaftAddr: "127.0.0.1:1"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a rogue join with a client certificate: %v, want PermissionDenied", err)
	}
	if ms, err := pb.NewClusterServiceClient(c.conn(l)).Members(ctx, &pb.MembersRequest{}); err != nil || len(ms.Members) != 3 {
		t.Fatalf("members after the rogue join: %v %v", ms, err)
	}
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func contains(cs []codes.Code, c codes.Code) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}
