package fsm

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Access control is replicated state like the member registry: users (a
// bcrypt hash of the password, never the password, and their roles),
// roles (permissions) and whether access control is on. Every member
// authorizes from its own copy, so a change takes effect on each as soon
// as it applies the entry, without a restart.

// Actions a permission allows.
const (
	ActionRead         = "read"
	ActionWrite        = "write"
	ActionSchema       = "schema"
	ActionClusterRead  = "cluster.read"
	ActionClusterAdmin = "cluster.admin"
)

// RootRole may do everything; it cannot be changed or deleted. RootUser
// is the user a bootstrap creates.
const (
	RootRole = "root"
	RootUser = "root"
)

// Bounds on the access-control state: it is held in memory on every
// member and written into every snapshot as one record.
const (
	MaxUsers           = 10_000
	MaxRoles           = 1_000
	MaxRolesPerUser    = 64
	MaxPermsPerRole    = 256
	maxAuthName        = 64
	maxPermissionTable = 256
	// MinHashCost and MaxHashCost bound a password hash's bcrypt cost: a
	// hash below the minimum is too cheap to guess against, one above the
	// maximum would make every member spend seconds checking a password
	// (2^cost rounds), a way to stall them with one request.
	MinHashCost = bcrypt.DefaultCost
	MaxHashCost = 14
)

// AuthState is the access-control state. It is immutable: a change
// replaces it, so readers on any goroutine load it without a lock.
type AuthState struct {
	Enabled bool
	// Revision is the log index of the last change (0: never changed).
	Revision uint64
	users    map[string]*authUser
	roles    map[string][]*pb.Permission
}

type authUser struct {
	hash  []byte
	roles []string
}

var emptyAuth = &AuthState{users: map[string]*authUser{}, roles: map[string][]*pb.Permission{}}

// Auth returns the access-control state. Safe from any goroutine.
func (f *FSM) Auth() *AuthState { return f.auth.Load() }

// AuthChanged is closed at the next change of the access-control state
// (then call it again): watch streams re-check their permission on it.
func (f *FSM) AuthChanged() <-chan struct{} {
	f.authMu.Lock()
	defer f.authMu.Unlock()
	return f.authCh
}

func (f *FSM) setAuth(a *AuthState) {
	f.auth.Store(a)
	f.authMu.Lock()
	close(f.authCh)
	f.authCh = make(chan struct{})
	f.authMu.Unlock()
}

// ResetAuth forgets every user and role and turns access control off, for
// seeding a new cluster from a backup; not on a running node.
func (f *FSM) ResetAuth() { f.setAuth(emptyAuth) }

// empty reports whether there is nothing to record (a cluster that never
// used access control writes no auth record in its snapshots).
func (a *AuthState) empty() bool { return !a.Enabled && len(a.users) == 0 && len(a.roles) == 0 }

// HasUser reports whether the user exists and returns its password hash
// (nil for a user without a password).
func (a *AuthState) HasUser(name string) ([]byte, bool) {
	u, ok := a.users[name]
	if !ok {
		return nil, false
	}
	return u.hash, true
}

// Roles returns a user's roles.
func (a *AuthState) Roles(user string) []string {
	if u, ok := a.users[user]; ok {
		return slices.Clone(u.roles)
	}
	return nil
}

// Allowed reports whether user may do action (on table, for the table
// actions). An unknown user may do nothing.
func (a *AuthState) Allowed(user, action, table string) bool {
	u, ok := a.users[user]
	if !ok {
		return false
	}
	for _, r := range u.roles {
		if r == RootRole {
			return true
		}
		for _, p := range a.roles[r] {
			if p.Action == action && (p.Table == table || p.Prefix && strings.HasPrefix(table, p.Table)) {
				return true
			}
		}
	}
	return false
}

// Users lists the users, by name, without their hashes.
func (a *AuthState) Users() []*pb.User {
	out := make([]*pb.User, 0, len(a.users))
	for _, name := range sortedKeys(a.users) {
		u := a.users[name]
		out = append(out, &pb.User{Name: name, Roles: slices.Clone(u.roles), HasPassword: len(u.hash) > 0})
	}
	return out
}

// RoleList lists the roles, by name, root first.
func (a *AuthState) RoleList() []*pb.Role {
	out := []*pb.Role{{Name: RootRole}}
	for _, name := range sortedKeys(a.roles) {
		perms := make([]*pb.Permission, len(a.roles[name]))
		for i, p := range a.roles[name] {
			perms[i] = proto.Clone(p).(*pb.Permission)
		}
		out = append(out, &pb.Role{Name: name, Permissions: perms})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// CheckAuthName checks a user or role name: 1-64 letters, digits and
// . _ @ - (a certificate's common name maps to a user of that name).
func CheckAuthName(kind, name string) error {
	if name == "" || len(name) > maxAuthName {
		return fmt.Errorf("%w: a %s name must be 1-%d characters", errInvalid, kind, maxAuthName)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._@-", c)) {
			return fmt.Errorf("%w: %s name %q may hold only letters, digits and . _ @ -", errInvalid, kind, name)
		}
	}
	return nil
}

// CheckPermission checks a permission's form.
func CheckPermission(p *pb.Permission) error {
	if p == nil {
		return fmt.Errorf("%w: no permission given", errInvalid)
	}
	switch p.Action {
	case ActionRead, ActionWrite, ActionSchema:
		if p.Table == "" && !p.Prefix {
			return fmt.Errorf("%w: a %s permission needs a table, or a prefix (an empty prefix: every table)", errInvalid, p.Action)
		}
		if len(p.Table) > maxPermissionTable {
			return fmt.Errorf("%w: permission table is over %d bytes", errInvalid, maxPermissionTable)
		}
	case ActionClusterRead, ActionClusterAdmin:
		if p.Table != "" || p.Prefix {
			return fmt.Errorf("%w: %s takes no table", errInvalid, p.Action)
		}
	default:
		return fmt.Errorf("%w: unknown action %q (read, write, schema, cluster.read, cluster.admin)", errInvalid, p.Action)
	}
	return nil
}

// CheckPasswordHash checks a stored password hash: empty (no password)
// or bcrypt with a cost in [MinHashCost, MaxHashCost].
func CheckPasswordHash(h []byte) error {
	if len(h) == 0 {
		return nil
	}
	cost, err := bcrypt.Cost(h)
	if err != nil {
		return fmt.Errorf("%w: password hash is not a bcrypt hash", errInvalid)
	}
	if cost < MinHashCost || cost > MaxHashCost {
		return fmt.Errorf("%w: password hash cost %d is outside [%d, %d]", errInvalid, cost, MinHashCost, MaxHashCost)
	}
	return nil
}

// CheckAuthChange checks a change's form, as the edge and every replica
// do; whether it applies to the current state is decided when applied.
func CheckAuthChange(c *cmdpb.AuthChange) error {
	if c == nil {
		return fmt.Errorf("%w: empty access-control change", errInvalid)
	}
	switch c.Op {
	case cmdpb.AuthOp_AUTH_OP_ENABLE, cmdpb.AuthOp_AUTH_OP_DISABLE:
		return nil
	case cmdpb.AuthOp_AUTH_OP_BOOTSTRAP:
		return CheckPasswordHash(c.PasswordHash)
	case cmdpb.AuthOp_AUTH_OP_USER_ADD, cmdpb.AuthOp_AUTH_OP_USER_PASSWD:
		if err := CheckAuthName("user", c.Name); err != nil {
			return err
		}
		return CheckPasswordHash(c.PasswordHash)
	case cmdpb.AuthOp_AUTH_OP_USER_DELETE:
		return CheckAuthName("user", c.Name)
	case cmdpb.AuthOp_AUTH_OP_USER_GRANT, cmdpb.AuthOp_AUTH_OP_USER_REVOKE:
		if err := CheckAuthName("user", c.Name); err != nil {
			return err
		}
		return CheckAuthName("role", c.Role)
	case cmdpb.AuthOp_AUTH_OP_ROLE_ADD, cmdpb.AuthOp_AUTH_OP_ROLE_DELETE:
		return CheckAuthName("role", c.Name)
	case cmdpb.AuthOp_AUTH_OP_ROLE_GRANT, cmdpb.AuthOp_AUTH_OP_ROLE_REVOKE:
		if err := CheckAuthName("role", c.Name); err != nil {
			return err
		}
		return CheckPermission(c.Permission)
	}
	return fmt.Errorf("%w: unknown access-control change %d", errInvalid, c.Op)
}

func authErr(reason, format string, args ...any) error {
	return &CommandError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// clone copies the maps (not the immutable users and permissions).
func (a *AuthState) clone() *AuthState {
	n := &AuthState{Enabled: a.Enabled, users: make(map[string]*authUser, len(a.users)+1), roles: make(map[string][]*pb.Permission, len(a.roles)+1)}
	for k, v := range a.users {
		n.users[k] = v
	}
	for k, v := range a.roles {
		n.roles[k] = v
	}
	return n
}

// rootHolders counts the users with the root role.
func (a *AuthState) rootHolders() int {
	n := 0
	for _, u := range a.users {
		if slices.Contains(u.roles, RootRole) {
			n++
		}
	}
	return n
}

// applyAuth applies one change at index. A refused change changes nothing.
func (f *FSM) applyAuth(index uint64, c *cmdpb.AuthChange) error {
	if err := CheckAuthChange(c); err != nil {
		return err
	}
	cur := f.auth.Load()
	next := cur.clone()
	lockout := "access control is on and no one else holds the root role: grant root to another user first, or disable access control"
	switch c.Op {
	case cmdpb.AuthOp_AUTH_OP_ENABLE:
		if cur.rootHolders() == 0 {
			return authErr(pb.ReasonPrecondition, "access control needs a user with the root role first, or no one could administer the cluster: memdbd user add root, memdbd user grant root root")
		}
		next.Enabled = true
	case cmdpb.AuthOp_AUTH_OP_DISABLE:
		next.Enabled = false
	case cmdpb.AuthOp_AUTH_OP_BOOTSTRAP:
		if len(cur.users) > 0 {
			// A bootstrap is done (another member's) or not wanted.
			return authErr(pb.ReasonPrecondition, "the cluster has users already: no bootstrap")
		}
		next.users[RootUser] = &authUser{hash: bytes.Clone(c.PasswordHash), roles: []string{RootRole}}
		next.Enabled = true
	case cmdpb.AuthOp_AUTH_OP_USER_ADD:
		if _, ok := cur.users[c.Name]; ok {
			return authErr(pb.ReasonUserExists, "user %q exists", c.Name)
		}
		if len(cur.users) >= MaxUsers {
			return authErr(pb.ReasonPrecondition, "the cluster has %d users, the most it keeps", MaxUsers)
		}
		next.users[c.Name] = &authUser{hash: bytes.Clone(c.PasswordHash)}
	case cmdpb.AuthOp_AUTH_OP_USER_PASSWD:
		u, ok := cur.users[c.Name]
		if !ok {
			return authErr(pb.ReasonUserNotFound, "no user %q", c.Name)
		}
		next.users[c.Name] = &authUser{hash: bytes.Clone(c.PasswordHash), roles: u.roles}
	case cmdpb.AuthOp_AUTH_OP_USER_DELETE:
		u, ok := cur.users[c.Name]
		if !ok {
			return authErr(pb.ReasonUserNotFound, "no user %q", c.Name)
		}
		if cur.Enabled && slices.Contains(u.roles, RootRole) && cur.rootHolders() == 1 {
			return authErr(pb.ReasonPrecondition, "user %q: %s", c.Name, lockout)
		}
		delete(next.users, c.Name)
	case cmdpb.AuthOp_AUTH_OP_USER_GRANT:
		u, ok := cur.users[c.Name]
		if !ok {
			return authErr(pb.ReasonUserNotFound, "no user %q", c.Name)
		}
		if _, ok := cur.roles[c.Role]; !ok && c.Role != RootRole {
			return authErr(pb.ReasonRoleNotFound, "no role %q", c.Role)
		}
		if slices.Contains(u.roles, c.Role) {
			return nil
		}
		if len(u.roles) >= MaxRolesPerUser {
			return authErr(pb.ReasonPrecondition, "user %q has %d roles, the most a user has", c.Name, MaxRolesPerUser)
		}
		roles := append(slices.Clone(u.roles), c.Role)
		sort.Strings(roles)
		next.users[c.Name] = &authUser{hash: u.hash, roles: roles}
	case cmdpb.AuthOp_AUTH_OP_USER_REVOKE:
		u, ok := cur.users[c.Name]
		if !ok {
			return authErr(pb.ReasonUserNotFound, "no user %q", c.Name)
		}
		if !slices.Contains(u.roles, c.Role) {
			return authErr(pb.ReasonRoleNotFound, "user %q does not have role %q", c.Name, c.Role)
		}
		if c.Role == RootRole && cur.Enabled && cur.rootHolders() == 1 {
			return authErr(pb.ReasonPrecondition, "user %q: %s", c.Name, lockout)
		}
		next.users[c.Name] = &authUser{hash: u.hash, roles: slices.DeleteFunc(slices.Clone(u.roles), func(r string) bool { return r == c.Role })}
	case cmdpb.AuthOp_AUTH_OP_ROLE_ADD:
		if _, ok := cur.roles[c.Name]; ok || c.Name == RootRole {
			return authErr(pb.ReasonRoleExists, "role %q exists", c.Name)
		}
		if len(cur.roles) >= MaxRoles {
			return authErr(pb.ReasonPrecondition, "the cluster has %d roles, the most it keeps", MaxRoles)
		}
		next.roles[c.Name] = nil
	case cmdpb.AuthOp_AUTH_OP_ROLE_DELETE:
		if c.Name == RootRole {
			return authErr(pb.ReasonPrecondition, "the root role is built in and cannot be deleted")
		}
		if _, ok := cur.roles[c.Name]; !ok {
			return authErr(pb.ReasonRoleNotFound, "no role %q", c.Name)
		}
		delete(next.roles, c.Name)
		// No user keeps a role that no longer exists: one created later
		// under the same name must not grant anything by surprise.
		for name, u := range cur.users {
			if slices.Contains(u.roles, c.Name) {
				next.users[name] = &authUser{hash: u.hash, roles: slices.DeleteFunc(slices.Clone(u.roles), func(r string) bool { return r == c.Name })}
			}
		}
	case cmdpb.AuthOp_AUTH_OP_ROLE_GRANT, cmdpb.AuthOp_AUTH_OP_ROLE_REVOKE:
		if c.Name == RootRole {
			return authErr(pb.ReasonPrecondition, "the root role is built in: it may do everything and cannot be changed")
		}
		perms, ok := cur.roles[c.Name]
		if !ok {
			return authErr(pb.ReasonRoleNotFound, "no role %q", c.Name)
		}
		i := slices.IndexFunc(perms, func(p *pb.Permission) bool { return proto.Equal(p, c.Permission) })
		if c.Op == cmdpb.AuthOp_AUTH_OP_ROLE_GRANT {
			if i >= 0 {
				return nil
			}
			if len(perms) >= MaxPermsPerRole {
				return authErr(pb.ReasonPrecondition, "role %q has %d permissions, the most a role has", c.Name, MaxPermsPerRole)
			}
			p := &pb.Permission{Action: c.Permission.Action, Table: c.Permission.Table, Prefix: c.Permission.Prefix}
			next.roles[c.Name] = append(slices.Clone(perms), p)
		} else {
			if i < 0 {
				return authErr(pb.ReasonPrecondition, "role %q does not have that permission", c.Name)
			}
			next.roles[c.Name] = slices.Delete(slices.Clone(perms), i, i+1)
		}
	}
	next.Revision = index
	f.setAuth(next)
	return nil
}

// encode is the state as a snapshot record, deterministic so that it can
// be part of the state hash; nil when there is nothing to record.
func (a *AuthState) encode() ([]byte, error) {
	if a.empty() {
		return nil, nil
	}
	snap := &cmdpb.SnapshotAuth{Enabled: a.Enabled, Roles: a.RoleList()[1:]}
	for _, name := range sortedKeys(a.users) {
		u := a.users[name]
		snap.Users = append(snap.Users, &cmdpb.SnapshotUser{Name: name, PasswordHash: u.hash, Roles: u.roles})
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(snap)
}

// decodeAuth reads an auth record, with the checks a change gets: a
// snapshot is input too.
func decodeAuth(b []byte, rev uint64) (*AuthState, error) {
	var snap cmdpb.SnapshotAuth
	if err := proto.Unmarshal(b, &snap); err != nil {
		return nil, err
	}
	if len(snap.Users) > MaxUsers || len(snap.Roles) > MaxRoles {
		return nil, fmt.Errorf("more users or roles than a member keeps")
	}
	a := &AuthState{Enabled: snap.Enabled, Revision: rev, users: map[string]*authUser{}, roles: map[string][]*pb.Permission{}}
	for _, r := range snap.Roles {
		if err := CheckAuthName("role", r.Name); err != nil || r.Name == RootRole || len(r.Permissions) > MaxPermsPerRole {
			return nil, fmt.Errorf("role %q is not valid", r.Name)
		}
		for _, p := range r.Permissions {
			if err := CheckPermission(p); err != nil {
				return nil, err
			}
		}
		a.roles[r.Name] = r.Permissions
	}
	for _, u := range snap.Users {
		if err := CheckAuthName("user", u.Name); err != nil {
			return nil, err
		}
		if err := CheckPasswordHash(u.PasswordHash); err != nil {
			return nil, err
		}
		if len(u.Roles) > MaxRolesPerUser {
			return nil, fmt.Errorf("user %q has too many roles", u.Name)
		}
		for _, r := range u.Roles {
			if _, ok := a.roles[r]; !ok && r != RootRole {
				return nil, fmt.Errorf("user %q has unknown role %q", u.Name, r)
			}
		}
		a.users[u.Name] = &authUser{hash: u.PasswordHash, roles: u.Roles}
	}
	return a, nil
}
