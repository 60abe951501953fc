package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"golang.org/x/crypto/bcrypt"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
)

// authService manages users and roles. Every change is one AuthChange
// through the log; the interceptors (auth.go) have already checked that
// the caller holds cluster.admin when access control is on.
type authService struct {
	pb.UnimplementedAuthServiceServer
	s *Server
}

// Passwords: bcrypt reads at most 72 bytes, and a short one is guessed.
const (
	minPassword = 8
	maxPassword = 72
)

// change proposes one access-control change and returns its revision.
// Every change is audited.
func (a *authService) change(ctx context.Context, c *cmdpb.AuthChange) (*pb.ResponseHeader, error) {
	err := fsm.CheckAuthChange(c)
	var rev uint64
	if err == nil {
		rev, err = a.s.admin(ctx, &cmdpb.Envelope{Command: &cmdpb.Envelope_Auth{Auth: c}})
	}
	attrs := []any{"op", c.GetOp().String(), "name", c.GetName(), "identity", callerIdentity(ctx).String(), "request_id", requestID(ctx)}
	if c.Role != "" {
		attrs = append(attrs, "role", c.Role)
	}
	if c.Permission != nil {
		attrs = append(attrs, "permission", need{action: c.Permission.Action, table: c.Permission.Table}.String(), "prefix", c.Permission.Prefix)
	}
	if err != nil {
		a.s.auditLog.Warn("access-control change refused", append(attrs, "err", err)...)
		return nil, toStatus(err)
	}
	a.s.auditLog.Info("access-control change", append(attrs, "revision", rev)...)
	return a.s.writeHeader(rev), nil
}

// hashPassword hashes a password given, or makes one; generated is the
// made one ("" when given). With none wanted it returns no hash.
func hashPassword(password string, none bool) (hash []byte, generated string, err error) {
	switch {
	case none && password != "":
		return nil, "", fmt.Errorf("%w: a password and no_password together", errInvalid)
	case none:
		return nil, "", nil
	case password == "":
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		generated = base64.RawURLEncoding.EncodeToString(b)
		password = generated
	case len(password) < minPassword || len(password) > maxPassword:
		return nil, "", fmt.Errorf("%w: a password must be %d-%d bytes", errInvalid, minPassword, maxPassword)
	}
	hash, err = bcrypt.GenerateFromPassword([]byte(password), fsm.MinHashCost)
	return hash, generated, err
}

func (a *authService) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	st := a.s.node.FSM().Auth()
	id, err := a.s.authenticate(ctx, st)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.WhoAmIResponse{Header: a.s.header(a.s.node.FSM().Store().View()), User: id.user, Method: id.method,
		AuthEnabled: st.Enabled, Roles: st.Roles(id.user)}, nil
}

func (a *authService) AuthEnable(ctx context.Context, _ *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ENABLE})
	if err != nil {
		return nil, err
	}
	return &pb.AuthEnableResponse{Header: h}, nil
}

func (a *authService) AuthDisable(ctx context.Context, _ *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_DISABLE})
	if err != nil {
		return nil, err
	}
	return &pb.AuthDisableResponse{Header: h}, nil
}

func (a *authService) UserAdd(ctx context.Context, req *pb.UserAddRequest) (*pb.UserAddResponse, error) {
	if err := fsm.CheckAuthName("user", req.Name); err != nil {
		return nil, toStatus(err)
	}
	hash, gen, err := hashPassword(req.Password, req.NoPassword)
	if err != nil {
		return nil, toStatus(err)
	}
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_ADD, Name: req.Name, PasswordHash: hash})
	if err != nil {
		return nil, err
	}
	return &pb.UserAddResponse{Header: h, GeneratedPassword: gen}, nil
}

func (a *authService) UserPasswd(ctx context.Context, req *pb.UserPasswdRequest) (*pb.UserPasswdResponse, error) {
	if err := fsm.CheckAuthName("user", req.Name); err != nil {
		return nil, toStatus(err)
	}
	hash, gen, err := hashPassword(req.Password, false)
	if err != nil {
		return nil, toStatus(err)
	}
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_PASSWD, Name: req.Name, PasswordHash: hash})
	if err != nil {
		return nil, err
	}
	return &pb.UserPasswdResponse{Header: h, GeneratedPassword: gen}, nil
}

func (a *authService) UserDelete(ctx context.Context, req *pb.UserDeleteRequest) (*pb.UserDeleteResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_DELETE, Name: req.Name})
	if err != nil {
		return nil, err
	}
	return &pb.UserDeleteResponse{Header: h}, nil
}

func (a *authService) UserGrantRole(ctx context.Context, req *pb.UserGrantRoleRequest) (*pb.UserGrantRoleResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_GRANT, Name: req.User, Role: req.Role})
	if err != nil {
		return nil, err
	}
	return &pb.UserGrantRoleResponse{Header: h}, nil
}

func (a *authService) UserRevokeRole(ctx context.Context, req *pb.UserRevokeRoleRequest) (*pb.UserRevokeRoleResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_USER_REVOKE, Name: req.User, Role: req.Role})
	if err != nil {
		return nil, err
	}
	return &pb.UserRevokeRoleResponse{Header: h}, nil
}

func (a *authService) UserList(ctx context.Context, _ *pb.UserListRequest) (*pb.UserListResponse, error) {
	return &pb.UserListResponse{Header: a.s.header(a.s.node.FSM().Store().View()), Users: a.s.node.FSM().Auth().Users()}, nil
}

func (a *authService) RoleAdd(ctx context.Context, req *pb.RoleAddRequest) (*pb.RoleAddResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_ADD, Name: req.Name})
	if err != nil {
		return nil, err
	}
	return &pb.RoleAddResponse{Header: h}, nil
}

func (a *authService) RoleDelete(ctx context.Context, req *pb.RoleDeleteRequest) (*pb.RoleDeleteResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_DELETE, Name: req.Name})
	if err != nil {
		return nil, err
	}
	return &pb.RoleDeleteResponse{Header: h}, nil
}

func (a *authService) RoleGrant(ctx context.Context, req *pb.RoleGrantRequest) (*pb.RoleGrantResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_GRANT, Name: req.Role, Permission: req.Permission})
	if err != nil {
		return nil, err
	}
	return &pb.RoleGrantResponse{Header: h}, nil
}

func (a *authService) RoleRevoke(ctx context.Context, req *pb.RoleRevokeRequest) (*pb.RoleRevokeResponse, error) {
	h, err := a.change(ctx, &cmdpb.AuthChange{Op: cmdpb.AuthOp_AUTH_OP_ROLE_REVOKE, Name: req.Role, Permission: req.Permission})
	if err != nil {
		return nil, err
	}
	return &pb.RoleRevokeResponse{Header: h}, nil
}

func (a *authService) RoleList(ctx context.Context, _ *pb.RoleListRequest) (*pb.RoleListResponse, error) {
	return &pb.RoleListResponse{Header: a.s.header(a.s.node.FSM().Store().View()), Roles: a.s.node.FSM().Auth().RoleList()}, nil
}
