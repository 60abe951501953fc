package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
)

// Access control, enforced in one place: the authUnary and authStream
// interceptors identify the caller of every call on the client port and
// check what the call needs (callNeeds) against the replicated roles
// (fsm.AuthState). Handlers do not check permissions. A member that
// forwards a write or a membership call to the leader sends the caller's
// identity with it, over the Raft port, and the leader authorizes the
// caller again against its own copy of the roles (checkProposal,
// peerService.Cluster).
//
// With access control off every caller may do everything, except that a
// Join over TLS with client certificates needs a member's certificate.

// Ways a caller is identified.
const (
	methodCertificate = "certificate"
	methodToken       = "token"
	methodNone        = "none"
)

// identity is a caller as this member identified it.
type identity struct {
	user     string // "" for an anonymous caller
	cert     string // common name of the verified client certificate
	method   string
	nodeCert bool // the certificate is valid for server use (a member's)
}

func (id identity) String() string {
	if id.user == "" {
		return "anonymous"
	}
	return id.user
}

func (id identity) proto() *cmdpb.Identity {
	return &cmdpb.Identity{User: id.user, CertName: id.cert, Method: id.method, NodeCert: id.nodeCert}
}

func identityOf(p *cmdpb.Identity) identity {
	if p == nil {
		return identity{method: methodNone}
	}
	return identity{user: p.User, cert: p.CertName, method: p.Method, nodeCert: p.NodeCert}
}

type identityKey struct{}

// callerIdentity is the identity the interceptors found for this call.
func callerIdentity(ctx context.Context) identity {
	if id, ok := ctx.Value(identityKey{}).(identity); ok {
		return id
	}
	return identity{method: methodNone}
}

// mdAuthorization carries a bearer token: "Bearer <user>:<password>".
const mdAuthorization = "authorization"

// need is a permission a call needs: action (or alt, when set) on table.
type need struct{ action, alt, table string }

func (n need) String() string {
	if n.table == "" && (n.action == fsm.ActionClusterRead || n.action == fsm.ActionClusterAdmin) {
		return n.action
	}
	return n.action + ":" + n.table
}

// Calls anyone may make, with access control on or off.
var openMethods = map[string]bool{
	pb.AuthService_WhoAmI_FullMethodName:       true,
	grpc_health_v1.Health_Check_FullMethodName: true,
	grpc_health_v1.Health_Watch_FullMethodName: true,
}

// authenticator verifies bearer tokens. A password check is a bcrypt
// comparison, tens of milliseconds of CPU by design; a token that passed
// is remembered (by its SHA-256, with the hash it matched, so a changed
// password or a deleted user no longer matches) and costs a map lookup
// from then on. Failures are limited per source address, and the checks
// run a few at a time, so that guessing cannot take a member's CPU.
type authenticator struct {
	mu       sync.Mutex
	verified map[[32]byte]verifiedToken
	failures map[string]*rate.Limiter
	checking chan struct{}
}

type verifiedToken struct {
	user string
	hash []byte
}

const (
	maxVerifiedTokens = 4096
	maxFailureSources = 4096
	// A source may fail authentication failureBurst times at once, then
	// once per failureEvery.
	failureBurst = 10
	failureEvery = time.Second
)

func newAuthenticator() *authenticator {
	return &authenticator{verified: map[[32]byte]verifiedToken{}, failures: map[string]*rate.Limiter{}, checking: make(chan struct{}, 2)}
}

// limiter returns the failure limiter of a source host.
func (a *authenticator) limiter(host string) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.failures[host]
	if !ok {
		if len(a.failures) >= maxFailureSources {
			// Forgetting every source at once is crude but bounded; a
			// source that fails again starts from a full burst.
			clear(a.failures)
		}
		l = rate.NewLimiter(rate.Every(failureEvery), failureBurst)
		a.failures[host] = l
	}
	return l
}

var errBadCredentials = errors.New("unknown user or wrong password")

// verify checks user:password against the state, for a caller at host.
func (a *authenticator) verify(ctx context.Context, st *fsm.AuthState, user, password, host string) error {
	hash, ok := st.HasUser(user)
	key := sha256.Sum256([]byte(user + "\x00" + password))
	a.mu.Lock()
	v, hit := a.verified[key]
	a.mu.Unlock()
	if hit && ok && v.user == user && bytes.Equal(v.hash, hash) {
		return nil
	}
	if !st.Enabled && (!ok || len(hash) == 0) {
		// Access control is off, and there is nothing to check against:
		// no failure to count (clients configured ahead of a bootstrap
		// send credentials of a user that does not exist yet).
		return errBadCredentials
	}
	lim := a.limiter(host)
	if lim.Tokens() < 1 {
		return fmt.Errorf("%w: too many failed authentications from %s; wait a second between attempts", errOverloaded, host)
	}
	if !ok || len(hash) == 0 {
		lim.Allow()
		return errBadCredentials
	}
	select {
	case a.checking <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-a.checking
	if err != nil {
		lim.Allow()
		return errBadCredentials
	}
	a.mu.Lock()
	if len(a.verified) >= maxVerifiedTokens {
		clear(a.verified)
	}
	a.verified[key] = verifiedToken{user: user, hash: hash}
	a.mu.Unlock()
	return nil
}

// authenticate identifies the caller of a call on the client port.
//
// Most connections carry one caller for their lifetime, so a connection
// remembers the identity its last call was found to have, with the
// authorization value and the access-control state it was found under:
// a call with the same value under the same state (any change replaces
// it) reuses it, with no hashing, no lock and no allocation. That keeps
// access control within a few percent of the cost of a read.
func (s *Server) authenticate(ctx context.Context, st *fsm.AuthState) (identity, error) {
	var authz string
	if vals := metadata.ValueFromIncomingContext(ctx, mdAuthorization); len(vals) > 0 {
		authz = vals[0]
	}
	conn := connOf(ctx)
	if conn != nil {
		if c := conn.ident.Load(); c != nil && c.state == st && c.authz == authz {
			return c.id, nil
		}
	}
	var host string
	var cs *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			host = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cs = &ti.State
		}
	}
	id, err := s.identify(ctx, st, cs, host, authz)
	if err == nil && conn != nil {
		conn.ident.Store(&cachedIdentity{state: st, authz: authz, id: id})
	}
	return id, err
}

// cachedIdentity is a connection's last identity (authenticate).
type cachedIdentity struct {
	state *fsm.AuthState
	authz string
	id    identity
}

// identify finds the caller from its verified client certificate and its
// authorization value ("Bearer <user>:<password>"), which wins when both
// are given. host is the caller's address, for the failure limit.
func (s *Server) identify(ctx context.Context, st *fsm.AuthState, cs *tls.ConnectionState, host, authz string) (identity, error) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	id := identity{method: methodNone}
	if cs != nil && len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		leaf := cs.VerifiedChains[0][0]
		if cn := certName(leaf); cn != "" {
			id = identity{user: cn, cert: cn, method: methodCertificate}
			for _, u := range leaf.ExtKeyUsage {
				id.nodeCert = id.nodeCert || u == x509.ExtKeyUsageServerAuth
			}
		}
	}
	if authz == "" {
		return id, nil
	}
	token, ok := strings.CutPrefix(authz, "Bearer ")
	user, password, ok2 := strings.Cut(token, ":")
	if !ok || !ok2 || user == "" {
		return id, fmt.Errorf("%w: the authorization must be \"Bearer <user>:<password>\"", errUnauthenticated)
	}
	if err := s.authn.verify(ctx, st, user, password, host); err != nil {
		if !st.Enabled {
			// Not a failure yet: with access control off the caller is
			// served anyway (as nobody in particular).
			return identity{method: methodNone}, err
		}
		s.auditLog.Warn("authentication failed", "user", user, "source", host, "request_id", requestID(ctx), "err", err)
		if errors.Is(err, errBadCredentials) {
			return id, fmt.Errorf("%w: %v", errUnauthenticated, err)
		}
		return id, err
	}
	id.user, id.method = user, methodToken
	return id, nil
}

// certName is the user a client certificate names: its common name, or
// without one its first DNS SAN.
func certName(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return ""
}

// AuthEnabled reports whether access control is on.
func (s *Server) AuthEnabled() bool { return s.node.FSM().Auth().Enabled }

// AllowHTTP decides whether an admin-port request may see what needs
// action (fsm.ActionClusterRead, fsm.ActionClusterAdmin), with the same
// identities as the gRPC port. With access control off, any caller may.
// The answer is an HTTP status (200 when allowed) and a message.
func (s *Server) AllowHTTP(r *http.Request, action string) (int, string) {
	st := s.node.FSM().Auth()
	if !st.Enabled {
		return http.StatusOK, ""
	}
	id, err := s.identify(r.Context(), st, r.TLS, r.RemoteAddr, r.Header.Get("Authorization"))
	if err == nil {
		err = authorize(st, id, []need{{action: action}})
	}
	switch {
	case err == nil:
		return http.StatusOK, ""
	case errors.Is(err, errUnauthenticated):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, errDenied):
		s.auditLog.Warn("admin request refused", "path", r.URL.Path, "identity", id.String(), "source", r.RemoteAddr, "err", err)
		return http.StatusForbidden, err.Error()
	}
	return http.StatusTooManyRequests, err.Error()
}

var (
	errUnauthenticated = errors.New("unauthenticated")
	errDenied          = errors.New("permission denied")
)

// deniedError names the permission a caller lacks.
type deniedError struct {
	id   identity
	need need
}

func (e *deniedError) Error() string {
	return fmt.Sprintf("%s may not do this: it needs the permission %s (memdbd role grant)", e.id, e.need)
}
func (e *deniedError) Unwrap() error { return errDenied }

// authorize checks that id may do everything in needs.
func authorize(st *fsm.AuthState, id identity, needs []need) error {
	if !st.Enabled {
		return nil
	}
	if id.user == "" {
		if len(needs) == 0 {
			return nil
		}
		return fmt.Errorf("%w: access control is on: identify with a client certificate or an authorization bearer token", errUnauthenticated)
	}
	for _, n := range needs {
		if !st.Allowed(id.user, n.action, n.table) && (n.alt == "" || !st.Allowed(id.user, n.alt, n.table)) {
			return &deniedError{id: id, need: n}
		}
	}
	return nil
}

// authorizeJoin applies the rule for joins: a member's certificate (one
// valid for server use) may join; with access control on, so may a user
// with cluster.admin; with access control off and no client
// certificates, anyone who reaches the port may (loopback, or --insecure).
func authorizeJoin(st *fsm.AuthState, id identity) error {
	if id.nodeCert {
		return nil
	}
	if st.Enabled {
		return authorize(st, id, []need{{action: fsm.ActionClusterAdmin}})
	}
	if id.cert != "" {
		return fmt.Errorf("%w: a join needs a member's certificate (valid for server use); %q is a client certificate", errDenied, id.cert)
	}
	return nil
}

// singleNeed is what a call that needs one permission needs: the data
// calls, checked without building a list (the common case, on every read
// and write).
func singleNeed(req any) (need, bool) {
	switch r := req.(type) {
	case *pb.GetRequest:
		return need{action: fsm.ActionRead, table: r.Table}, true
	case *pb.BatchGetRequest:
		return need{action: fsm.ActionRead, table: r.Table}, true
	case *pb.ScanRequest:
		return need{action: fsm.ActionRead, table: r.Table}, true
	case *pb.CountRequest:
		return need{action: fsm.ActionRead, table: r.Table}, true
	case *pb.WatchRequest:
		return need{action: fsm.ActionRead, table: r.Table}, true
	case *pb.InsertRequest:
		return need{action: fsm.ActionWrite, table: r.Table}, true
	case *pb.UpsertRequest:
		return need{action: fsm.ActionWrite, table: r.Table}, true
	case *pb.UpdateRequest:
		return need{action: fsm.ActionWrite, table: r.Table}, true
	case *pb.DeleteRequest:
		return need{action: fsm.ActionWrite, table: r.Table}, true
	case *pb.TouchRequest:
		return need{action: fsm.ActionWrite, table: r.Table}, true
	case *pb.DescribeTableRequest:
		return need{action: fsm.ActionRead, alt: fsm.ActionSchema, table: r.Table}, true
	case *pb.CreateTableRequest:
		return need{action: fsm.ActionSchema, table: r.GetSchema().GetName()}, true
	case *pb.DropTableRequest:
		return need{action: fsm.ActionSchema, table: r.Table}, true
	case *pb.CreateIndexRequest:
		return need{action: fsm.ActionSchema, table: r.Table}, true
	case *pb.DropIndexRequest:
		return need{action: fsm.ActionSchema, table: r.Table}, true
	case *pb.StatusRequest, *pb.MembersRequest:
		return need{action: fsm.ActionClusterRead}, true
	case *pb.TransferLeadershipRequest, *pb.PromoteMemberRequest, *pb.RemoveMemberRequest, *pb.SnapshotRequest, *pb.BackupRequest:
		return need{action: fsm.ActionClusterAdmin}, true
	}
	return need{}, false
}

// callNeeds is what a call needs, by method and request.
func callNeeds(method string, req any) ([]need, error) {
	if n, ok := singleNeed(req); ok {
		return []need{n}, nil
	}
	switch r := req.(type) {
	case *pb.TxnRequest:
		return txnNeeds(r.Conditions, r.Then, r.Else), nil
	case *pb.WatchProgressRequest, *pb.ListTablesRequest:
		return []need{}, nil // any identified caller; ListTables is filtered
	}
	if strings.HasPrefix(method, "/"+pb.AuthService_ServiceDesc.ServiceName+"/") {
		return []need{{action: fsm.ActionClusterAdmin}}, nil
	}
	if strings.HasPrefix(method, "/grpc.reflection.") {
		return []need{}, nil // the public API's schema, for any identified caller (grpcurl)
	}
	return nil, fmt.Errorf("%w: %s is not a call a client may make with access control on", errDenied, method)
}

func schema(t string) []need { return []need{{action: fsm.ActionSchema, table: t}} }

// txnNeeds: read for the tables conditions test and Gets read, write for
// the tables the other operations change.
func txnNeeds(conds []*pb.Condition, ops ...[]*pb.Op) []need {
	var out []need
	seen := map[need]bool{}
	add := func(n need) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, c := range conds {
		add(need{action: fsm.ActionRead, table: c.GetTable()})
	}
	for _, list := range ops {
		for _, op := range list {
			switch o := op.GetOp().(type) {
			case *pb.Op_Get:
				add(need{action: fsm.ActionRead, table: o.Get.GetTable()})
			case *pb.Op_Insert:
				add(need{action: fsm.ActionWrite, table: o.Insert.GetTable()})
			case *pb.Op_Upsert:
				add(need{action: fsm.ActionWrite, table: o.Upsert.GetTable()})
			case *pb.Op_Update:
				add(need{action: fsm.ActionWrite, table: o.Update.GetTable()})
			case *pb.Op_Delete:
				add(need{action: fsm.ActionWrite, table: o.Delete.GetTable()})
			case *pb.Op_Touch:
				add(need{action: fsm.ActionWrite, table: o.Touch.GetTable()})
			}
		}
	}
	return out
}

// envelopeNeeds is what a proposed command needs, for a proposal a
// member forwards on a client's behalf.
func envelopeNeeds(env *cmdpb.Envelope) []need {
	switch c := env.Command.(type) {
	case *cmdpb.Envelope_Txn:
		return txnNeeds(c.Txn.GetConditions(), c.Txn.GetThen(), c.Txn.GetElse())
	case *cmdpb.Envelope_CreateTable:
		return schema(c.CreateTable.GetName())
	case *cmdpb.Envelope_DropTable:
		return schema(c.DropTable.GetTable())
	case *cmdpb.Envelope_CreateIndex:
		return schema(c.CreateIndex.GetTable())
	case *cmdpb.Envelope_DropIndex:
		return schema(c.DropIndex.GetTable())
	case *cmdpb.Envelope_Auth:
		if c.Auth.GetOp() == cmdpb.AuthOp_AUTH_OP_BOOTSTRAP {
			return nil // a member's, applied only to a cluster with no users
		}
		return []need{{action: fsm.ActionClusterAdmin}}
	}
	return nil
}

// authUnary identifies the caller and authorizes the call.
func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	st := s.node.FSM().Auth()
	if !st.Enabled && info.FullMethod != pb.ClusterService_Join_FullMethodName {
		if n, ok := singleNeed(req); ok && n.action == fsm.ActionRead {
			// Nothing to check: the common case costs one atomic load.
			return h(ctx, req)
		}
		// A write may reach a leader that has applied the change turning
		// access control on before this member has: it then authorizes
		// the caller this member names, so name it. Credentials that do
		// not check out name nobody, as access control is off here.
		if id, err := s.authenticate(ctx, st); err == nil {
			ctx = context.WithValue(ctx, identityKey{}, id)
		}
		return h(ctx, req)
	}
	id, err := s.authenticate(ctx, st)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.authorizeCall(st, id, info.FullMethod, req); err != nil {
		return nil, toStatus(err)
	}
	if n, ok := singleNeed(req); !ok || n.action != fsm.ActionRead {
		// Writes, schema, membership and user changes carry the identity
		// to the leader and into the audit log; a read needs it no more.
		ctx = context.WithValue(ctx, identityKey{}, id)
	}
	resp, err := h(ctx, req)
	if lt, ok := resp.(*pb.ListTablesResponse); ok && st.Enabled {
		// Only the tables the caller may do something with.
		kept := lt.Tables[:0]
		for _, t := range lt.Tables {
			name := t.GetSchema().GetName()
			if st.Allowed(id.user, fsm.ActionRead, name) || st.Allowed(id.user, fsm.ActionWrite, name) || st.Allowed(id.user, fsm.ActionSchema, name) {
				kept = append(kept, t)
			}
		}
		lt.Tables = kept
	}
	return resp, err
}

func (s *Server) authorizeCall(st *fsm.AuthState, id identity, method string, req any) error {
	if openMethods[method] {
		return nil
	}
	if method == pb.ClusterService_Join_FullMethodName {
		if err := authorizeJoin(st, id); err != nil {
			s.auditLog.Warn("call refused", "method", method, "identity", id.String(), "err", err)
			return err
		}
		return nil
	}
	if !st.Enabled {
		return nil
	}
	if id.user == "" {
		return fmt.Errorf("%w: access control is on: identify with a client certificate or an authorization bearer token", errUnauthenticated)
	}
	var err error
	if n, ok := singleNeed(req); ok {
		if !st.Allowed(id.user, n.action, n.table) && (n.alt == "" || !st.Allowed(id.user, n.alt, n.table)) {
			err = &deniedError{id: id, need: n}
		}
	} else {
		var needs []need
		if needs, err = callNeeds(method, req); err == nil {
			err = authorize(st, id, needs)
		}
	}
	if err != nil {
		s.auditLog.Warn("call refused", "method", method, "identity", id.String(), "err", err)
	}
	return err
}

// authStream authorizes a stream: at its start for calls that need no
// request (Backup), and at its first message otherwise (Watch, whose
// table is in it). A watch whose permission is revoked while it runs ends
// with PermissionDenied.
func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	// Streams are checked with access control off too (a stream is long
	// lived, the check is cheap beside it): a watch opened before access
	// control is turned on ends then if its caller may not read.
	st := s.node.FSM().Auth()
	id, err := s.authenticate(ss.Context(), st)
	if err != nil {
		return toStatus(err)
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(ss.Context(), identityKey{}, id))
	defer cancel(nil)
	w := &authedStream{ServerStream: ss, s: s, id: id, method: info.FullMethod, ctx: ctx, cancel: cancel}
	if info.FullMethod != pb.DataService_Watch_FullMethodName {
		if err := s.authorizeCall(st, id, info.FullMethod, streamRequest(info.FullMethod)); err != nil {
			return toStatus(err)
		}
		w.checked = true
	}
	err = h(srv, w)
	if w.registered {
		s.grants.remove(w)
	}
	if cause := context.Cause(ctx); errors.Is(cause, errDenied) {
		return toStatus(cause)
	}
	return err
}

// streamRequest stands in for the request of a stream authorized at its
// start.
func streamRequest(method string) any {
	if method == pb.ClusterService_Backup_FullMethodName {
		return &pb.BackupRequest{}
	}
	return nil
}

type authedStream struct {
	grpc.ServerStream
	s       *Server
	id      identity
	method  string
	ctx     context.Context
	cancel  context.CancelCauseFunc
	checked bool
	// registered: in s.grants, until the stream ends (authStream).
	registered bool
}

func (w *authedStream) Context() context.Context { return w.ctx }

func (w *authedStream) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if w.checked {
		return nil
	}
	w.checked = true
	st := w.s.node.FSM().Auth()
	if err := w.s.authorizeCall(st, w.id, w.method, m); err != nil {
		return toStatus(err)
	}
	if needs, err := callNeeds(w.method, m); err == nil && len(needs) > 0 {
		w.s.grants.add(w, needs)
		w.registered = true
		// A change applied since the check above is seen here; any later
		// one by watchGrants.
		w.recheck(w.s.node.FSM().Auth(), needs)
	}
	return nil
}

// streamGrants are the open streams whose permission is checked again
// at every access-control change (watchGrants): one goroutine for all of
// them, not one per stream.
type streamGrants struct {
	mu      sync.Mutex
	streams map[*authedStream][]need
}

func (g *streamGrants) add(w *authedStream, needs []need) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.streams == nil {
		g.streams = map[*authedStream][]need{}
	}
	g.streams[w] = needs
}

func (g *streamGrants) remove(w *authedStream) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.streams, w)
}

// watchGrants ends, at every access-control change, the streams whose
// caller lost what it needs.
func (s *Server) watchGrants() {
	defer s.wg.Done()
	f := s.node.FSM()
	for {
		changed := f.AuthChanged()
		s.grants.mu.Lock()
		open := make(map[*authedStream][]need, len(s.grants.streams))
		for w, needs := range s.grants.streams {
			open[w] = needs
		}
		s.grants.mu.Unlock()
		for w, needs := range open {
			w.recheck(f.Auth(), needs)
		}
		select {
		case <-changed:
		case <-s.stop:
			return
		}
	}
}

// recheck ends the stream if its caller may no longer do what it needs.
func (w *authedStream) recheck(st *fsm.AuthState, needs []need) {
	err := authorize(st, w.id, needs)
	if err == nil {
		return
	}
	if errors.Is(err, errUnauthenticated) {
		err = fmt.Errorf("%w: %v", errDenied, err)
	}
	w.s.auditLog.Info("stream ended: permission revoked", "method", w.method, "identity", w.id.String(), "err", err)
	w.cancel(err)
}
