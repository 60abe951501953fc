package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
)

// fuzzMethods are the client API's unary methods the fuzzer drives, each
// with the request type it decodes the fuzzer's bytes into.
var fuzzMethods = []struct {
	method string
	req    func() proto.Message
	resp   func() proto.Message
}{
	{pb.DataService_Get_FullMethodName, func() proto.Message { return &pb.GetRequest{} }, func() proto.Message { return &pb.GetResponse{} }},
	{pb.DataService_BatchGet_FullMethodName, func() proto.Message { return &pb.BatchGetRequest{} }, func() proto.Message { return &pb.BatchGetResponse{} }},
	{pb.DataService_Scan_FullMethodName, func() proto.Message { return &pb.ScanRequest{} }, func() proto.Message { return &pb.ScanResponse{} }},
	{pb.DataService_Count_FullMethodName, func() proto.Message { return &pb.CountRequest{} }, func() proto.Message { return &pb.CountResponse{} }},
	{pb.DataService_Insert_FullMethodName, func() proto.Message { return &pb.InsertRequest{} }, func() proto.Message { return &pb.InsertResponse{} }},
	{pb.DataService_Upsert_FullMethodName, func() proto.Message { return &pb.UpsertRequest{} }, func() proto.Message { return &pb.UpsertResponse{} }},
	{pb.DataService_Update_FullMethodName, func() proto.Message { return &pb.UpdateRequest{} }, func() proto.Message { return &pb.UpdateResponse{} }},
	{pb.DataService_Delete_FullMethodName, func() proto.Message { return &pb.DeleteRequest{} }, func() proto.Message { return &pb.DeleteResponse{} }},
	{pb.DataService_Touch_FullMethodName, func() proto.Message { return &pb.TouchRequest{} }, func() proto.Message { return &pb.TouchResponse{} }},
	{pb.DataService_Txn_FullMethodName, func() proto.Message { return &pb.TxnRequest{} }, func() proto.Message { return &pb.TxnResponse{} }},
	{pb.SchemaService_CreateTable_FullMethodName, func() proto.Message { return &pb.CreateTableRequest{} }, func() proto.Message { return &pb.CreateTableResponse{} }},
	{pb.SchemaService_CreateIndex_FullMethodName, func() proto.Message { return &pb.CreateIndexRequest{} }, func() proto.Message { return &pb.CreateIndexResponse{} }},
	{pb.SchemaService_DescribeTable_FullMethodName, func() proto.Message { return &pb.DescribeTableRequest{} }, func() proto.Message { return &pb.DescribeTableResponse{} }},
}

// FuzzHandlers drives the gRPC handlers of a real one-member server with
// well-formed requests built from the fuzzer's bytes: the first byte
// picks the method, the rest is the request's protobuf encoding (bytes
// that do not decode are skipped: gRPC refuses them before any handler).
// No request may crash a handler (a panic becomes Internal), and the
// member must go on answering.
func FuzzHandlers(f *testing.F) {
	cl := testcluster.Start(f, 1, testcluster.Options{})
	cc, err := grpc.NewClient(cl.Members[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = cc.Close() })
	if _, err := pb.NewSchemaServiceClient(cc).CreateTable(ctxTB(f, 5*time.Second), &pb.CreateTableRequest{Schema: &pb.TableSchema{
		Name: "kv", PrimaryKey: "k",
		Fields:  []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}, {Name: "n", Type: pb.FieldType_FIELD_TYPE_INT64}, {Name: "f", Type: pb.FieldType_FIELD_TYPE_DOUBLE}},
		Indexes: []*pb.IndexSchema{{Name: "by_n", Fields: []string{"n"}}},
	}}); err != nil {
		f.Fatal(err)
	}
	seed := func(i int, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(i)}, b...))
	}
	row := map[string]*pb.Value{"k": str("a"), "n": {Kind: &pb.Value_IntValue{IntValue: 7}}, "f": {Kind: &pb.Value_DoubleValue{DoubleValue: -0.5}}}
	seed(0, &pb.GetRequest{Table: "kv", Key: str("a")})
	seed(1, &pb.BatchGetRequest{Table: "kv", Keys: []*pb.Value{str("a"), str("b")}})
	seed(2, &pb.ScanRequest{Table: "kv", Index: "by_n", Limit: 3, Reverse: true})
	seed(3, &pb.CountRequest{Table: "kv"})
	seed(4, &pb.InsertRequest{Table: "kv", Fields: row})
	seed(5, &pb.UpsertRequest{Table: "kv", Fields: row, TtlMs: 60000})
	seed(6, &pb.UpdateRequest{Table: "kv", Key: str("a"), Set: map[string]*pb.Value{"n": {Kind: &pb.Value_IntValue{IntValue: 8}}}})
	seed(7, &pb.DeleteRequest{Table: "kv", Key: str("a")})
	seed(8, &pb.TouchRequest{Table: "kv", Key: str("a"), TtlMs: 1000})
	seed(9, &pb.TxnRequest{Then: []*pb.Op{{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "kv", Fields: row}}}, {Op: &pb.Op_Get{Get: &pb.GetOp{Table: "kv", Key: str("a")}}}}})
	seed(10, &pb.CreateTableRequest{Schema: &pb.TableSchema{Name: "t2", PrimaryKey: "id", Fields: []*pb.FieldSchema{{Name: "id", Type: pb.FieldType_FIELD_TYPE_BYTES}}}})
	seed(11, &pb.CreateIndexRequest{Table: "kv", Index: &pb.IndexSchema{Name: "by_f", Fields: []string{"f"}, Unique: true}})
	seed(12, &pb.DescribeTableRequest{Table: "kv"})

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		m := fuzzMethods[int(b[0])%len(fuzzMethods)]
		req := m.req()
		// Unknown fields are dropped: re-encoded, a field of a known number
		// with another wire type would no longer decode on the server, and
		// gRPC answers a message that does not decode with Internal before
		// any handler runs.
		if (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b[1:], req) != nil {
			return
		}
		err := cc.Invoke(ctxT(t, 5*time.Second), m.method, req, m.resp())
		if code := status.Code(err); code == codes.Internal || code == codes.Unknown {
			t.Fatalf("%s %v: %v", m.method, req, err)
		}
		// The member still answers.
		if _, err := pb.NewDataServiceClient(cc).Count(ctxT(t, 5*time.Second), &pb.CountRequest{Table: "kv"}); err != nil && status.Code(err) != codes.NotFound {
			t.Fatalf("after %s %v: the member no longer answers: %v", m.method, req, err)
		}
	})
}

func ctxTB(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
