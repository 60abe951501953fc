package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// reflector is a grpcurl-like client: it learns the API from the
// server's reflection service alone.
type reflector struct {
	stream rpb.ServerReflection_ServerReflectionInfoClient
	protos map[string]*descriptorpb.FileDescriptorProto
}

func newReflector(ctx context.Context, cc *grpc.ClientConn) (*reflector, error) {
	s, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	return &reflector{stream: s, protos: map[string]*descriptorpb.FileDescriptorProto{}}, nil
}

func (r *reflector) ask(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
	if err := r.stream.Send(req); err != nil {
		return nil, err
	}
	resp, err := r.stream.Recv()
	if err != nil {
		return nil, err
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, fmt.Errorf("reflection error %d: %s", e.ErrorCode, e.ErrorMessage)
	}
	return resp, nil
}

func (r *reflector) services() ([]string, error) {
	resp, err := r.ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		out = append(out, s.Name)
	}
	return out, nil
}

// addFiles records the file descriptors of a response.
func (r *reflector) addFiles(resp *rpb.ServerReflectionResponse) error {
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fd); err != nil {
			return err
		}
		r.protos[fd.GetName()] = fd
	}
	return nil
}

// files resolves symbol to its file and every file it depends on, and
// builds a registry from them (and nothing compiled in).
func (r *reflector) files(symbol string) (*protoregistry.Files, error) {
	resp, err := r.ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
	if err != nil {
		return nil, err
	}
	if err := r.addFiles(resp); err != nil {
		return nil, err
	}
	// The server sends dependencies it has not sent on this stream yet;
	// ask for any still missing.
	for {
		var missing []string
		for _, fd := range r.protos {
			for _, dep := range fd.GetDependency() {
				if _, ok := r.protos[dep]; !ok && !slices.Contains(missing, dep) {
					missing = append(missing, dep)
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		for _, name := range missing {
			resp, err := r.ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name}})
			if err != nil {
				return nil, fmt.Errorf("file %s: %w", name, err)
			}
			if err := r.addFiles(resp); err != nil {
				return nil, err
			}
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range r.protos {
		set.File = append(set.File, fd)
	}
	return protodesc.NewFiles(set)
}

// invokeJSON calls a unary method described only by md with a request
// given as JSON, and returns the response as JSON.
func invokeJSON(ctx context.Context, cc *grpc.ClientConn, files *protoregistry.Files, md protoreflect.MethodDescriptor, reqJSON string) (string, error) {
	types := dynamicpb.NewTypes(files)
	req := dynamicpb.NewMessage(md.Input())
	if err := (protojson.UnmarshalOptions{Resolver: types}).Unmarshal([]byte(reqJSON), req); err != nil {
		return "", fmt.Errorf("request JSON: %w", err)
	}
	resp := dynamicpb.NewMessage(md.Output())
	method := fmt.Sprintf("/%s/%s", md.Parent().FullName(), md.Name())
	if err := cc.Invoke(ctx, method, req, resp); err != nil {
		return "", err
	}
	b, err := (protojson.MarshalOptions{Resolver: types}).Marshal(resp)
	if err != nil {
		return "", err
	}
	// protojson varies its whitespace on purpose; compact it for matching.
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return "", err
	}
	return out.String(), nil
}

// The API can be discovered and called through server reflection alone,
// as grpcurl does.
func TestReflectionClient(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitReady(10*time.Second, nil)
	cl := c.client()
	c.createTable(cl, kvSchema("refl"))
	ctx, cancel := c.callCtx(30 * time.Second)
	defer cancel()
	f := c.others(l)[0] // through a follower: it forwards the write
	cc := c.conn(f)

	r, err := newReflector(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := r.services()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("services: %v", svcs)
	for _, want := range []string{"memdb.v1.DataService", "memdb.v1.SchemaService", "memdb.v1.ClusterService", "grpc.health.v1.Health"} {
		if !slices.Contains(svcs, want) {
			t.Errorf("reflection lists %v, without %s", svcs, want)
		}
	}

	files, err := r.files("memdb.v1.DataService")
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("memdb.v1.DataService")
	if err != nil {
		t.Fatal(err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("memdb.v1.DataService is a %T", d)
	}
	upsert, get := sd.Methods().ByName("Upsert"), sd.Methods().ByName("Get")
	if upsert == nil || get == nil {
		t.Fatalf("DataService methods: %v", sd.Methods())
	}
	// The descriptors are the server's, not this binary's generated code.
	if upsert.Input() == (&pb.UpsertRequest{}).ProtoReflect().Descriptor() {
		t.Fatal("the resolved descriptor is the compiled-in one")
	}

	out, err := invokeJSON(ctx, cc, files, upsert,
		`{"table":"refl","fields":{"k":{"stringValue":"hello"},"v":{"stringValue":"from reflection"},"n":{"intValue":"7"}}}`)
	if err != nil {
		t.Fatalf("Upsert through reflection: %v", err)
	}
	t.Logf("Upsert response: %s", out)
	if !strings.Contains(out, `"version":"1"`) {
		t.Errorf("Upsert response %s lacks version 1", out)
	}
	out, err = invokeJSON(ctx, cc, files, get, `{"table":"refl","key":{"stringValue":"hello"}}`)
	if err != nil {
		t.Fatalf("Get through reflection: %v", err)
	}
	t.Logf("Get response: %s", out)
	if !strings.Contains(out, `"found":true`) || !strings.Contains(out, `"from reflection"`) {
		t.Errorf("Get response %s lacks the written value", out)
	}
	// A refused call comes back as a gRPC status through the dynamic path
	// too.
	if _, err := invokeJSON(ctx, cc, files, get, `{"table":"nope","key":{"stringValue":"hello"}}`); err == nil {
		t.Error("Get of an unknown table through reflection succeeded")
	} else {
		checkCode(t, "Get of an unknown table through reflection", err, codes.NotFound, pb.ReasonTableNotFound)
	}

	// The real grpcurl, when there is one.
	bin, err := exec.LookPath("grpcurl")
	if err != nil {
		if p, aerr := filepath.Abs(filepath.Join("..", "bin", "grpcurl")); aerr == nil {
			if st, serr := os.Stat(p); serr == nil && !st.IsDir() {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Log("grpcurl is neither on PATH nor at ../bin/grpcurl: skipping the grpcurl check")
		return
	}
	addr := c.nodes[f].clientAddr
	grpcurl := func(args ...string) string {
		t.Helper()
		gctx, gcancel := context.WithTimeout(ctx, 15*time.Second)
		defer gcancel()
		out, err := exec.CommandContext(gctx, bin, args...).CombinedOutput()
		if err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("grpcurl: %v", err)
			}
			t.Errorf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Logf("using %s", bin)
	list := grpcurl("-plaintext", addr, "list")
	for _, want := range []string{"memdb.v1.DataService", "memdb.v1.SchemaService", "grpc.health.v1.Health"} {
		if !strings.Contains(list, want) {
			t.Errorf("grpcurl list:\n%s\nlacks %s", list, want)
		}
	}
	got := grpcurl("-plaintext", "-d", `{"table":"refl","key":{"stringValue":"hello"}}`, addr, "memdb.v1.DataService/Get")
	if !strings.Contains(got, "from reflection") {
		t.Errorf("grpcurl Get:\n%s\nlacks the written value", got)
	}
}
