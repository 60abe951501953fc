package server

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	"github.com/memdbd/memdbd/fsm"
)

// Members of versions before command format 3 serve and call the peer
// service on the client port; from format 3 on it is on the Raft port
// only (node/mux.go). For a rolling upgrade from such a version the two
// must still reach each other while both run, so:
//
//   - a member calls another on its client port when that member
//     registered a command format below peerOnRaftPort (peerTarget);
//   - a member answers the peer service on its client port only while a
//     member of such a version is registered (legacyPeerService), which
//     is exactly when the cluster already exposed it there; once every
//     member is upgraded, the client port refuses it (Unimplemented).
//
// Reflection on the client port never lists the peer service, nor serves
// the descriptors of the log's command format (reflectionServices,
// publicFiles).

// peerOnRaftPort is the first command format whose members serve the peer
// service on their Raft port.
const peerOnRaftPort = 3

// legacyMembers reports whether a member of the Raft configuration
// registered a version that serves the peer service on its client port
// only. Registrations of members since removed do not count, so the
// window closes with the upgrade or the removal of the last such member.
func (s *Server) legacyMembers() bool {
	for _, m := range s.node.FSM().Members() {
		if m.MaxCommandVersion > 0 && m.MaxCommandVersion < peerOnRaftPort {
			if _, member := s.node.PeerAddr(m.ID); member {
				return true
			}
		}
	}
	return false
}

// isLegacy reports whether member m is of a version that serves the peer
// service on its client port.
func isLegacy(m fsm.Member, ok bool) bool {
	return ok && m.MaxCommandVersion > 0 && m.MaxCommandVersion < peerOnRaftPort && m.ClientAddr != ""
}

// peerTarget returns the connection to member id's peer service: on its
// Raft port (raftAddr), or on its client port when it is of an older
// version.
func (s *Server) peerTarget(id, raftAddr string) (*grpc.ClientConn, error) {
	if m, ok := s.node.FSM().Member(id); isLegacy(m, ok) {
		s.metrics.forwarded.WithLabelValues("to_client_port").Inc()
		return s.fwd.conn(m.ClientAddr)
	}
	return s.peerConn(raftAddr)
}

// legacyPeerService is the peer service on the client port, for members
// of older versions during a rolling upgrade (see above).
type legacyPeerService struct {
	cmdpb.UnimplementedPeerServiceServer
	p *peerService
}

var errPeerNotHere = status.Error(codes.Unimplemented, "the peer service is not served on the client port: members call each other on the Raft port")

func (l *legacyPeerService) open() bool { return l.p.s.legacyMembers() }

func (l *legacyPeerService) Propose(ctx context.Context, req *cmdpb.ProposeRequest) (*cmdpb.ProposeResponse, error) {
	if !l.open() {
		return nil, errPeerNotHere
	}
	// Nor does it vouch for a client: what comes through it is
	// authorized as anonymous.
	req.Caller = nil
	if r := req.GetEnvelope().GetRegisterMember(); r != nil {
		// The client port identifies no caller: a registration through it
		// may only repeat what a member registered, so that nobody can
		// point the others at an address of their choosing or pretend a
		// member is older to keep this window open.
		cur, ok := l.p.s.node.FSM().Member(r.NodeId)
		if ok && (r.ClientAddr != cur.ClientAddr || r.RaftAddr != cur.RaftAddr || r.MaxCommandVersion < cur.MaxCommandVersion) {
			return nil, toStatus(fmt.Errorf("%w: a registration through the client port may not change a member's addresses or lower its command format", errInvalid))
		}
	}
	return l.p.Propose(ctx, req)
}

func (l *legacyPeerService) ReadIndex(ctx context.Context, req *cmdpb.ReadIndexRequest) (*cmdpb.ReadIndexResponse, error) {
	if !l.open() {
		return nil, errPeerNotHere
	}
	return l.p.ReadIndex(ctx, req)
}

func (l *legacyPeerService) ReadIndexStream(stream cmdpb.PeerService_ReadIndexStreamServer) error {
	if !l.open() {
		return errPeerNotHere
	}
	return l.p.ReadIndexStream(stream)
}

func (l *legacyPeerService) LeaseProbe(ctx context.Context, req *cmdpb.LeaseProbeRequest) (*cmdpb.LeaseProbeResponse, error) {
	if !l.open() {
		return nil, errPeerNotHere
	}
	return l.p.LeaseProbe(ctx, req)
}

// registerReflection registers server reflection on the client port,
// without the peer service and the command format's descriptors.
func registerReflection(srv *grpc.Server) {
	opts := reflection.ServerOptions{Services: reflectionServices{srv}, DescriptorResolver: publicFiles{}}
	rpb.RegisterServerReflectionServer(srv, reflection.NewServerV1(opts))
	// Older tools still ask the v1alpha service.
	rpbalpha.RegisterServerReflectionServer(srv, reflection.NewServer(opts)) //nolint:staticcheck // served for older clients
}

// reflectionServices lists the client port's services but the peer
// service.
type reflectionServices struct{ srv *grpc.Server }

func (r reflectionServices) GetServiceInfo() map[string]grpc.ServiceInfo {
	out := r.srv.GetServiceInfo()
	delete(out, cmdpb.PeerService_ServiceDesc.ServiceName)
	return out
}

// internalPackage is the protobuf package of the log's command format.
const internalPackage = "memdb.command.v1"

// publicFiles resolves descriptors from the global registry, except the
// command format's.
type publicFiles struct{}

func (publicFiles) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
	if err == nil && fd.Package() == internalPackage {
		return nil, protoregistry.NotFound
	}
	return fd, err
}

func (publicFiles) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if strings.HasPrefix(string(name), internalPackage+".") {
		return nil, protoregistry.NotFound
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
