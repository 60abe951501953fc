package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// testHash is a valid password hash (cost MinHashCost), computed once for
// the whole package run: bcrypt at that cost takes tens of milliseconds.
var testHash = sync.OnceValues(func() ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte("correct horse"), MinHashCost)
})

func validHash(t testing.TB) []byte {
	t.Helper()
	h, err := testHash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// withCost returns h with its cost field rewritten: bcrypt.Cost reads the
// cost from the header, so this makes a well-formed hash of any cost
// without spending 2^cost rounds on it.
func withCost(t testing.TB, h []byte, cost int) []byte {
	t.Helper()
	parts := bytes.SplitN(h, []byte("$"), 4) // "", "2a", "10", salt+hash
	if len(parts) != 4 {
		t.Fatalf("unexpected bcrypt hash %q", h)
	}
	out := fmt.Appendf(nil, "$%s$%02d$%s", parts[1], cost, parts[3])
	if got, err := bcrypt.Cost(out); err != nil || got != cost {
		t.Fatalf("rewritten hash: cost %d, %v", got, err)
	}
	return out
}

func authEnv(c *cmdpb.AuthChange) *cmdpb.Envelope {
	return &cmdpb.Envelope{Command: &cmdpb.Envelope_Auth{Auth: c}}
}

func authOp(op cmdpb.AuthOp) *cmdpb.Envelope { return authEnv(&cmdpb.AuthChange{Op: op}) }

func userAdd(name string, hash []byte) *cmdpb.Envelope {
	return authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_ADD, Name: name, PasswordHash: hash})
}

func userOp(op cmdpb.AuthOp, user, role string) *cmdpb.Envelope {
	return authEnv(&cmdpb.AuthChange{Op: op, Name: user, Role: role})
}

func roleOp(op cmdpb.AuthOp, role string) *cmdpb.Envelope {
	return authEnv(&cmdpb.AuthChange{Op: op, Name: role})
}

func roleGrant(role, action, table string, prefix bool) *cmdpb.Envelope {
	return authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_GRANT, Name: role,
		Permission: &pb.Permission{Action: action, Table: table, Prefix: prefix}})
}

// userWithRole adds a user holding one existing role (or root).
func (h *harness) userWithRole(user, role string, hash []byte) {
	h.t.Helper()
	h.mustApply(userAdd(user, hash))
	h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, user, role))
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// authRecord is the state's snapshot record, to compare two states.
func authRecord(t testing.TB, a *AuthState) []byte {
	t.Helper()
	b, err := a.encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hashWithoutAuth is the state hash of f as if access control did not
// exist: the store, the member registry and the sessions alone.
func hashWithoutAuth(t testing.TB, f *FSM) uint64 {
	t.Helper()
	members, err := f.members.Load().encode()
	if err != nil {
		t.Fatal(err)
	}
	_, sessions, err := encodeSessions(f.sessions)
	if err != nil {
		t.Fatal(err)
	}
	return stateHash(f.Store().View(), members, sessions)
}

// Changes applied as log entries through ApplyBatch grant exactly the
// permissions they name: by table, by prefix, by empty prefix (every
// table), cluster actions, and everything for the root role; an unknown
// user or one without roles may do nothing.
func TestAuthApplyGrantsPermissions(t *testing.T) {
	h := newHarness(t)
	hash := validHash(t)

	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"))
	h.mustApply(roleGrant("reader", ActionRead, "a", false))
	h.mustApply(userAdd("alice", hash))
	r := h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "alice", "reader"))

	a := h.f.Auth()
	if a.Revision != r.Revision || a.Revision != h.index {
		t.Fatalf("auth revision %d, want the last change's index %d", a.Revision, h.index)
	}
	if got, ok := a.HasUser("alice"); !ok || !bytes.Equal(got, hash) {
		t.Fatalf("HasUser(alice) = %q, %v", got, ok)
	}
	if got := a.Roles("alice"); !slices.Equal(got, []string{"reader"}) {
		t.Fatalf("Roles(alice) = %v", got)
	}
	if a.Enabled {
		t.Fatal("access control is on without an ENABLE")
	}

	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "app"))
	h.mustApply(roleGrant("app", ActionWrite, "app_", true))
	h.userWithRole("bob", "app", nil)

	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "everything"))
	h.mustApply(roleGrant("everything", ActionSchema, "", true))
	h.userWithRole("carol", "everything", nil)

	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "ops"))
	h.mustApply(roleGrant("ops", ActionClusterAdmin, "", false))
	h.userWithRole("dave", "ops", nil)

	h.userWithRole("eve", RootRole, hash)
	h.mustApply(userAdd("frank", nil)) // no role

	a = h.f.Auth()
	cases := []struct {
		user, action, table string
		want                bool
	}{
		{"alice", ActionRead, "a", true},
		{"alice", ActionWrite, "a", false},
		{"alice", ActionRead, "b", false},
		{"alice", ActionRead, "ab", false}, // not a prefix permission
		{"alice", ActionClusterRead, "", false},

		{"bob", ActionWrite, "app_x", true},
		{"bob", ActionWrite, "app_", true},
		{"bob", ActionWrite, "ap", false},
		{"bob", ActionWrite, "xapp_", false},
		{"bob", ActionRead, "app_x", false},

		{"carol", ActionSchema, "anything", true},
		{"carol", ActionSchema, "a", true},
		{"carol", ActionSchema, "", true},
		{"carol", ActionRead, "a", false},

		{"dave", ActionClusterAdmin, "", true},
		{"dave", ActionClusterRead, "", false},
		{"dave", ActionRead, "a", false},

		{"eve", ActionRead, "zzz", true},
		{"eve", ActionWrite, "a", true},
		{"eve", ActionSchema, "b", true},
		{"eve", ActionClusterRead, "", true},
		{"eve", ActionClusterAdmin, "", true},

		{"frank", ActionRead, "a", false},
		{"mallory", ActionRead, "a", false},
		{"mallory", ActionClusterAdmin, "", false},
		{"", ActionRead, "a", false},
	}
	for _, c := range cases {
		if got := a.Allowed(c.user, c.action, c.table); got != c.want {
			t.Errorf("Allowed(%q, %q, %q) = %v, want %v", c.user, c.action, c.table, got, c.want)
		}
	}

	wantUsers := []*pb.User{
		{Name: "alice", Roles: []string{"reader"}, HasPassword: true},
		{Name: "bob", Roles: []string{"app"}},
		{Name: "carol", Roles: []string{"everything"}},
		{Name: "dave", Roles: []string{"ops"}},
		{Name: "eve", Roles: []string{RootRole}, HasPassword: true},
		{Name: "frank"},
	}
	if got := a.Users(); !protoSliceEqual(got, wantUsers) {
		t.Fatalf("Users() = %v, want %v", got, wantUsers)
	}
	wantRoles := []*pb.Role{
		{Name: RootRole},
		{Name: "app", Permissions: []*pb.Permission{{Action: ActionWrite, Table: "app_", Prefix: true}}},
		{Name: "everything", Permissions: []*pb.Permission{{Action: ActionSchema, Prefix: true}}},
		{Name: "ops", Permissions: []*pb.Permission{{Action: ActionClusterAdmin}}},
		{Name: "reader", Permissions: []*pb.Permission{{Action: ActionRead, Table: "a"}}},
	}
	if got := a.RoleList(); !protoSliceEqual(got, wantRoles) {
		t.Fatalf("RoleList() = %v, want %v", got, wantRoles)
	}
}

func protoSliceEqual[M proto.Message](a, b []M) bool {
	return slices.EqualFunc(a, b, func(x, y M) bool { return proto.Equal(x, y) })
}

// A refused change answers with its reason and leaves the state exactly as
// it was: same AuthState (same revision, same record), nothing signalled.
func TestAuthRefusalsChangeNothing(t *testing.T) {
	h := newHarness(t)
	hash := validHash(t)
	cheap, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"))
	h.mustApply(roleGrant("reader", ActionRead, "a", false))
	h.userWithRole("alice", "reader", hash)

	long := strings.Repeat("x", 65)
	type refusal struct {
		name   string
		env    *cmdpb.Envelope
		reason string
	}
	check := func(t *testing.T, cases []refusal) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := h.f.Auth()
				rec := authRecord(t, before)
				ch := h.f.AuthChanged()
				r := h.apply(tc.env)
				if r.ErrorReason != tc.reason {
					t.Fatalf("reason %q (%s), want %q", r.ErrorReason, r.ErrorMessage, tc.reason)
				}
				if r.ErrorMessage == "" {
					t.Fatal("refusal without a message")
				}
				if r.Revision != h.index || h.f.Applied() != h.index {
					t.Fatalf("result revision %d, applied %d, want %d", r.Revision, h.f.Applied(), h.index)
				}
				after := h.f.Auth()
				if after != before || after.Revision != before.Revision || !bytes.Equal(authRecord(t, after), rec) {
					t.Fatalf("refused change replaced the state (revision %d -> %d)", before.Revision, after.Revision)
				}
				if isClosed(ch) {
					t.Fatal("refused change signalled AuthChanged")
				}
			})
		}
	}

	const (
		invalid = pb.ReasonInvalidArgument
		precond = pb.ReasonPrecondition
	)
	check(t, []refusal{
		{"user add existing", userAdd("alice", nil), pb.ReasonUserExists},
		{"grant unknown role", userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "alice", "ghost"), pb.ReasonRoleNotFound},
		{"grant to unknown user", userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "nobody", "reader"), pb.ReasonUserNotFound},
		{"revoke role not held", userOp(cmdpb.AuthOp_AUTH_OP_USER_REVOKE, "alice", RootRole), pb.ReasonRoleNotFound},
		{"delete unknown user", userOp(cmdpb.AuthOp_AUTH_OP_USER_DELETE, "nobody", ""), pb.ReasonUserNotFound},
		{"role add existing", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"), pb.ReasonRoleExists},
		{"role add root", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, RootRole), pb.ReasonRoleExists},
		{"delete unknown role", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_DELETE, "ghost"), pb.ReasonRoleNotFound},
		{"enable without root holder", authOp(cmdpb.AuthOp_AUTH_OP_ENABLE), precond},
		{"delete root role", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_DELETE, RootRole), precond},
		{"grant to root role", roleGrant(RootRole, ActionRead, "a", false), precond},
		{"revoke from root role", authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_REVOKE, Name: RootRole, Permission: &pb.Permission{Action: ActionRead, Table: "a"}}), precond},
		{"revoke permission not held", authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_REVOKE, Name: "reader", Permission: &pb.Permission{Action: ActionWrite, Table: "a"}}), precond},

		{"empty user name", userAdd("", nil), invalid},
		{"65-char user name", userAdd(long, nil), invalid},
		{"user name with space", userAdd("a b", nil), invalid},
		{"empty role name", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, ""), invalid},
		{"65-char role name", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, long), invalid},
		{"role name with space", roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "a b"), invalid},
		{"grant role with bad name", userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "alice", "a b"), invalid},
		{"hash below min cost", userAdd("cheap", cheap), invalid},
		{"passwd to hash below min cost", authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_PASSWD, Name: "alice", PasswordHash: cheap}), invalid},
		{"hash above max cost", userAdd("dear", withCost(t, hash, MaxHashCost+1)), invalid},
		{"garbage hash", userAdd("garbage", []byte("not a bcrypt hash at all")), invalid},
		{"bootstrap with garbage hash", authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_BOOTSTRAP, PasswordHash: []byte("$2a$10$short")}), invalid},
		{"read without table", roleGrant("reader", ActionRead, "", false), invalid},
		{"table over limit", roleGrant("reader", ActionRead, strings.Repeat("t", maxPermissionTable+1), false), invalid},
		{"cluster.read with table", roleGrant("reader", ActionClusterRead, "a", false), invalid},
		{"cluster.admin with prefix", roleGrant("reader", ActionClusterAdmin, "", true), invalid},
		{"unknown action", roleGrant("reader", "delete", "a", false), invalid},
		{"no permission", authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_GRANT, Name: "reader"}), invalid},
		{"unspecified op", authOp(cmdpb.AuthOp_AUTH_OP_UNSPECIFIED), invalid},
		{"unknown op", authOp(cmdpb.AuthOp(99)), invalid},
		{"no change", authEnv(nil), invalid},
	})

	// With access control on, the only root holder cannot be removed.
	h.userWithRole("admin", RootRole, hash)
	h.mustApply(authOp(cmdpb.AuthOp_AUTH_OP_ENABLE))
	if !h.f.Auth().Enabled {
		t.Fatal("ENABLE with a root holder did not enable")
	}
	check(t, []refusal{
		{"delete only root user", userOp(cmdpb.AuthOp_AUTH_OP_USER_DELETE, "admin", ""), precond},
		{"revoke root from only holder", userOp(cmdpb.AuthOp_AUTH_OP_USER_REVOKE, "admin", RootRole), precond},
	})

	// The refusals are about the last holder: with a second one, both go
	// through.
	h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "alice", RootRole))
	h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_REVOKE, "admin", RootRole))
	h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "admin", RootRole))
	h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_DELETE, "admin", ""))
	if _, ok := h.f.Auth().HasUser("admin"); ok {
		t.Fatal("admin still exists")
	}
	check(t, []refusal{
		{"delete new only root user", userOp(cmdpb.AuthOp_AUTH_OP_USER_DELETE, "alice", ""), precond},
	})
}

// BOOTSTRAP on a state without users creates root (with the given hash and
// the root role) and turns access control on; on a state with users it is
// refused with PRECONDITION and changes nothing, however many times it
// is repeated (every bootstrapping member proposes one).
func TestAuthBootstrap(t *testing.T) {
	hash := validHash(t)

	h := newHarness(t)
	ch := h.f.AuthChanged()
	h.mustApply(authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_BOOTSTRAP, PasswordHash: hash}))
	a := h.f.Auth()
	if !a.Enabled || a.Revision != h.index {
		t.Fatalf("after bootstrap: enabled %v, revision %d (want true, %d)", a.Enabled, a.Revision, h.index)
	}
	if !isClosed(ch) {
		t.Fatal("bootstrap did not signal AuthChanged")
	}
	want := []*pb.User{{Name: RootUser, Roles: []string{RootRole}, HasPassword: true}}
	if got := a.Users(); !protoSliceEqual(got, want) {
		t.Fatalf("Users() = %v, want %v", got, want)
	}
	if got, _ := a.HasUser(RootUser); !bytes.Equal(got, hash) {
		t.Fatalf("root's hash %q, want %q", got, hash)
	}
	if !a.Allowed(RootUser, ActionClusterAdmin, "") || !a.Allowed(RootUser, ActionWrite, "t") {
		t.Fatal("bootstrapped root is not allowed everything")
	}

	// Again, with another password (none): nothing changes.
	rec := authRecord(t, a)
	if r := h.apply(authOp(cmdpb.AuthOp_AUTH_OP_BOOTSTRAP)); r.ErrorReason != pb.ReasonPrecondition {
		t.Fatalf("second bootstrap: %v, want PRECONDITION", r)
	}
	if b := h.f.Auth(); b != a || !bytes.Equal(authRecord(t, b), rec) {
		t.Fatal("second bootstrap changed the state")
	}
	if got, _ := h.f.Auth().HasUser(RootUser); !bytes.Equal(got, hash) {
		t.Fatal("second bootstrap replaced root's password")
	}

	// A state that has a user (and access control off) is left alone.
	g := newHarness(t)
	g.mustApply(userAdd("alice", nil))
	before := g.f.Auth()
	if r := g.apply(authEnv(&cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_BOOTSTRAP, PasswordHash: hash})); r.ErrorReason != pb.ReasonPrecondition {
		t.Fatalf("bootstrap over existing users: %v, want PRECONDITION", r)
	}
	after := g.f.Auth()
	if after != before || after.Enabled {
		t.Fatalf("bootstrap over existing users changed the state (enabled %v)", after.Enabled)
	}
	if _, ok := after.HasUser(RootUser); ok {
		t.Fatal("bootstrap over existing users created root")
	}
}

// ROLE_DELETE takes the role away from every user holding it, so that a
// role created later under the same name grants them nothing.
func TestAuthRoleDeleteRevokesFromUsers(t *testing.T) {
	h := newHarness(t)
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"))
	h.mustApply(roleGrant("reader", ActionRead, "a", false))
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "writer"))
	h.mustApply(roleGrant("writer", ActionWrite, "a", false))
	h.userWithRole("alice", "reader", nil)
	h.mustApply(userOp(cmdpb.AuthOp_AUTH_OP_USER_GRANT, "alice", "writer"))
	h.userWithRole("bob", "reader", nil)
	if got := h.f.Auth().Roles("alice"); !slices.Equal(got, []string{"reader", "writer"}) {
		t.Fatalf("alice's roles %v", got)
	}

	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_DELETE, "reader"))
	a := h.f.Auth()
	if got := a.Roles("alice"); !slices.Equal(got, []string{"writer"}) {
		t.Fatalf("alice's roles after delete: %v, want [writer]", got)
	}
	if got := a.Roles("bob"); len(got) != 0 {
		t.Fatalf("bob's roles after delete: %v, want none", got)
	}
	if a.Allowed("alice", ActionRead, "a") || a.Allowed("bob", ActionRead, "a") {
		t.Fatal("a deleted role still grants")
	}
	if !a.Allowed("alice", ActionWrite, "a") {
		t.Fatal("deleting one role took away another")
	}
	for _, r := range a.RoleList() {
		if r.Name == "reader" {
			t.Fatal("deleted role still listed")
		}
	}

	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"))
	h.mustApply(roleGrant("reader", ActionRead, "a", false))
	if a := h.f.Auth(); a.Allowed("bob", ActionRead, "a") || len(a.Roles("bob")) != 0 {
		t.Fatal("a role re-created under the same name grants its former holders")
	}
}

// AuthChanged is closed by an applied change and replaced by a fresh
// channel, which the next change closes in turn.
func TestAuthChangedClosed(t *testing.T) {
	h := newHarness(t)
	ch := h.f.AuthChanged()
	if isClosed(ch) {
		t.Fatal("closed before any change")
	}
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"))
	if !isClosed(ch) {
		t.Fatal("not closed after a change")
	}
	ch2 := h.f.AuthChanged()
	if isClosed(ch2) {
		t.Fatal("the next channel is already closed")
	}
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	if isClosed(ch2) {
		t.Fatal("closed by a command that is not an access-control change")
	}
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_DELETE, "reader"))
	if !isClosed(ch2) {
		t.Fatal("not closed after the second change")
	}
}

// authPopulated returns a harness with a table and a row, then users,
// roles and access control turned on as its last entry.
func authPopulated(t *testing.T) *harness {
	t.Helper()
	hash := validHash(t)
	h := newHarness(t)
	h.createUsers()
	h.mustApply(&cmdpb.Envelope{Command: txn(insert("k1", "k1@x", 7))})
	h.mustApply(&cmdpb.Envelope{Session: sess("client-1", 1, 1), Command: txn(upsert("k2", "k2@x", 8))})
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "reader"))
	h.mustApply(roleGrant("reader", ActionRead, "users", false))
	h.mustApply(roleGrant("reader", ActionWrite, "app_", true))
	h.mustApply(roleOp(cmdpb.AuthOp_AUTH_OP_ROLE_ADD, "empty"))
	h.userWithRole("alice", "reader", hash)
	h.userWithRole("admin", RootRole, hash)
	h.mustApply(userAdd("bob", nil))
	h.mustApply(authOp(cmdpb.AuthOp_AUTH_OP_ENABLE))
	return h
}

var authQueries = []struct{ user, action, table string }{
	{"alice", ActionRead, "users"},
	{"alice", ActionWrite, "users"},
	{"alice", ActionWrite, "app_1"},
	{"alice", ActionClusterRead, ""},
	{"admin", ActionClusterAdmin, ""},
	{"admin", ActionSchema, "users"},
	{"bob", ActionRead, "users"},
	{"nobody", ActionRead, "users"},
}

// A snapshot carries the access-control state: it passes CheckSnapshot,
// and restoring it gives the same users, hashes, roles, switch and
// answers, the same state hash, and signals AuthChanged.
func TestAuthSnapshotRoundTrip(t *testing.T) {
	h := authPopulated(t)
	src := h.f.Auth()
	data := snapshotBytes(t, h.f)
	if err := CheckSnapshot(bytes.NewReader(data)); err != nil {
		t.Fatalf("CheckSnapshot: %v", err)
	}
	if n, err := AuthRecordBytes(bytes.NewReader(data)); err != nil || n <= 0 {
		t.Fatalf("AuthRecordBytes = %d, %v; want a record", n, err)
	}

	g := newHarness(t)
	ch := g.f.AuthChanged()
	if err := restoreBytes(g.f, data); err != nil {
		t.Fatal(err)
	}
	if !isClosed(ch) {
		t.Fatal("restore did not signal AuthChanged")
	}
	got := g.f.Auth()
	if !got.Enabled {
		t.Fatal("restored state has access control off")
	}
	if got.Revision != src.Revision {
		t.Fatalf("restored revision %d, want %d", got.Revision, src.Revision)
	}
	if !protoSliceEqual(got.Users(), src.Users()) {
		t.Fatalf("users %v, want %v", got.Users(), src.Users())
	}
	if !protoSliceEqual(got.RoleList(), src.RoleList()) {
		t.Fatalf("roles %v, want %v", got.RoleList(), src.RoleList())
	}
	for _, u := range []string{"alice", "admin", "bob"} {
		a, _ := src.HasUser(u)
		b, ok := got.HasUser(u)
		if !ok || !bytes.Equal(a, b) {
			t.Fatalf("user %s: hash %q, want %q", u, b, a)
		}
	}
	for _, q := range authQueries {
		if a, b := src.Allowed(q.user, q.action, q.table), got.Allowed(q.user, q.action, q.table); a != b {
			t.Errorf("Allowed(%q, %q, %q): restored %v, original %v", q.user, q.action, q.table, b, a)
		}
	}
	if !got.Allowed("alice", ActionRead, "users") || got.Allowed("alice", ActionWrite, "users") {
		t.Fatal("restored permissions are not alice's")
	}
	want, err := h.f.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	if gh, _ := g.f.StateHash(); gh != want {
		t.Fatal("restored state hash differs")
	}
	// The access-control record is part of the state hash.
	if want == hashWithoutAuth(t, h.f) {
		t.Fatal("the state hash does not cover access control")
	}
	// A snapshot of the restored state is byte-identical.
	if again := snapshotBytes(t, g.f); !bytes.Equal(again, data) {
		t.Fatal("snapshot of the restored state differs")
	}
}

// A state that never used access control writes no auth record and hashes
// as if the feature did not exist; restoring such a snapshot over a state
// with users leaves none.
func TestAuthAbsentWhenUnused(t *testing.T) {
	target := authPopulated(t)
	h := newHarness(t)
	h.createUsers()
	h.mustApply(&cmdpb.Envelope{Command: txn(insert("k1", "k1@x", 7))})
	// Past the target's applied index: Restore keeps a state that is
	// ahead of the snapshot.
	for h.index <= target.index {
		h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	}
	data := snapshotBytes(t, h.f)
	if n, err := AuthRecordBytes(bytes.NewReader(data)); err != nil || n != 0 {
		t.Fatalf("AuthRecordBytes = %d, %v; want 0", n, err)
	}
	if err := CheckSnapshot(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	want, err := h.f.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	if want != hashWithoutAuth(t, h.f) {
		t.Fatal("an unused access control changes the state hash")
	}

	if err := restoreBytes(target.f, data); err != nil {
		t.Fatal(err)
	}
	a := target.f.Auth()
	if a.Enabled || len(a.Users()) != 0 || len(a.RoleList()) != 1 || a.Allowed("admin", ActionRead, "users") {
		t.Fatalf("restore of a snapshot without access control kept it: enabled %v, users %v, roles %v", a.Enabled, a.Users(), a.RoleList())
	}
	if got, _ := target.f.StateHash(); got != want {
		t.Fatal("restored state hash differs")
	}
}

// StripAuth removes exactly the auth record (AuthRecordBytes of it): the
// copy passes CheckSnapshot and restores the same data with no users and
// access control off. A snapshot without the record is copied unchanged,
// and damaged or truncated input is refused.
func TestStripAuth(t *testing.T) {
	h := authPopulated(t)
	data := snapshotBytes(t, h.f)
	n, err := AuthRecordBytes(bytes.NewReader(data))
	if err != nil || n <= 0 {
		t.Fatalf("AuthRecordBytes = %d, %v", n, err)
	}
	var out bytes.Buffer
	if err := StripAuth(bytes.NewReader(data), &out); err != nil {
		t.Fatal(err)
	}
	stripped := out.Bytes()
	if int64(len(stripped)) != int64(len(data))-n {
		t.Fatalf("stripped %d bytes, want %d - %d = %d", len(stripped), len(data), n, int64(len(data))-n)
	}
	if err := CheckSnapshot(bytes.NewReader(stripped)); err != nil {
		t.Fatalf("CheckSnapshot of the stripped copy: %v", err)
	}
	if m, err := AuthRecordBytes(bytes.NewReader(stripped)); err != nil || m != 0 {
		t.Fatalf("stripped copy: AuthRecordBytes = %d, %v", m, err)
	}
	if bytes.Contains(stripped, validHash(t)) {
		t.Fatal("stripped copy still holds a password hash")
	}

	g := newHarness(t)
	g.mustApply(userAdd("stale", nil)) // replaced by the restore
	if err := restoreBytes(g.f, stripped); err != nil {
		t.Fatal(err)
	}
	a := g.f.Auth()
	if a.Enabled || len(a.Users()) != 0 || len(a.RoleList()) != 1 {
		t.Fatalf("restored stripped copy: enabled %v, users %v, roles %v", a.Enabled, a.Users(), a.RoleList())
	}
	if g.f.Store().View().Hash() != h.f.Store().View().Hash() || g.f.Applied() != h.index {
		t.Fatal("stripped copy restored different data")
	}
	row, ok, err := g.f.Store().View().Get("users", store.String("k1"))
	if err != nil || !ok {
		t.Fatalf("row k1: %v, %v", ok, err)
	}
	if e, _ := row.Get("email"); e.AsString() != "k1@x" {
		t.Fatalf("row k1 = %+v", row)
	}
	if got, _ := g.f.StateHash(); got != hashWithoutAuth(t, h.f) {
		t.Fatal("stripped state's hash is not the original's without access control")
	}

	// Without an auth record, the copy is the input.
	var again bytes.Buffer
	if err := StripAuth(bytes.NewReader(stripped), &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), stripped) {
		t.Fatal("stripping a snapshot without an auth record changed it")
	}

	refused := func(name string, b []byte) {
		t.Helper()
		err := StripAuth(bytes.NewReader(b), &bytes.Buffer{})
		if err == nil {
			t.Fatalf("%s: StripAuth succeeded", name)
		}
		if !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, ErrSnapshotVersion) {
			t.Fatalf("%s: error %v is not a corruption error", name, err)
		}
	}
	mid := bytes.Clone(data)
	mid[len(mid)/2] ^= 0x01
	refused("flipped middle byte", mid)
	for i := range data {
		b := bytes.Clone(data)
		b[i] ^= 0x40
		refused(fmt.Sprintf("flipped byte %d", i), b)
	}
	for l := 0; l < len(data); l++ {
		refused(fmt.Sprintf("truncated to %d", l), data[:l])
	}
	refused("trailing byte", append(bytes.Clone(data), 0))
}

// decodeAuth, which reads the record from snapshots, refuses what a change
// would be refused for; here a user holding a role that does not exist and
// a hash costlier than MaxHashCost. Such a record also fails CheckSnapshot
// and Restore, which leaves the target as it was.
func TestAuthDecodeRefuses(t *testing.T) {
	hash := validHash(t)
	base := func() *cmdpb.SnapshotAuth {
		return &cmdpb.SnapshotAuth{
			Enabled: true,
			Roles:   []*pb.Role{{Name: "reader", Permissions: []*pb.Permission{{Action: ActionRead, Table: "a"}}}},
			Users: []*cmdpb.SnapshotUser{
				{Name: "admin", PasswordHash: hash, Roles: []string{RootRole}},
				{Name: "alice", PasswordHash: hash, Roles: []string{"reader"}},
			},
		}
	}
	marshal := func(m *cmdpb.SnapshotAuth) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The unaltered record decodes, so each refusal below is the alteration's.
	a, err := decodeAuth(marshal(base()), 9)
	if err != nil {
		t.Fatalf("valid record refused: %v", err)
	}
	if !a.Enabled || a.Revision != 9 || !a.Allowed("alice", ActionRead, "a") || !a.Allowed("admin", ActionClusterAdmin, "") {
		t.Fatal("valid record decoded wrong")
	}

	unknownRole := base()
	unknownRole.Users[1].Roles = []string{"reader", "ghost"}
	dear := base()
	dear.Users[1].PasswordHash = withCost(t, hash, MaxHashCost+1)
	bad := []struct {
		name string
		rec  []byte
	}{
		{"unknown role", marshal(unknownRole)},
		{"hash cost above max", marshal(dear)},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeAuth(tc.rec, 1); err == nil {
				t.Fatal("decodeAuth accepted it")
			}

			// The same record inside an otherwise valid snapshot.
			src := newHarness(t)
			src.createUsers()
			snap, err := src.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			snap.(*fsmSnapshot).auth = tc.rec
			var sink memSink
			if err := snap.Persist(&sink); err != nil {
				t.Fatal(err)
			}
			data := sink.Bytes()
			if err := CheckSnapshot(bytes.NewReader(data)); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("CheckSnapshot: %v, want a corruption error", err)
			}
			target := authPopulated(t)
			before := target.f.Auth()
			hb, _ := target.f.StateHash()
			if err := restoreBytes(target.f, data); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("Restore: %v, want a corruption error", err)
			}
			if hg, _ := target.f.StateHash(); target.f.Auth() != before || hg != hb {
				t.Fatal("a refused restore changed the state")
			}
		})
	}
}

// An access-control change needs command format 4: Encode writes it at 4
// whatever the feature level, and this binary applies version 4.
func TestAuthRequiredVersion(t *testing.T) {
	if MaxCommandVersion < 4 {
		t.Fatalf("MaxCommandVersion %d < 4", MaxCommandVersion)
	}
	for _, op := range []cmdpb.AuthOp{cmdpb.AuthOp_AUTH_OP_ENABLE, cmdpb.AuthOp_AUTH_OP_USER_ADD, cmdpb.AuthOp_AUTH_OP_BOOTSTRAP} {
		env := authOp(op)
		if v := RequiredVersion(env); v != 4 {
			t.Fatalf("RequiredVersion(%v) = %d, want 4", op, v)
		}
		b, err := Encode(env, logTime0, 1)
		if err != nil {
			t.Fatal(err)
		}
		var dec cmdpb.Envelope
		if err := dec.UnmarshalVT(b); err != nil {
			t.Fatal(err)
		}
		if dec.Version != 4 {
			t.Fatalf("%v encoded at version %d, want 4", op, dec.Version)
		}
	}
}
