package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

// The data quota: once the row data reaches it, writes that add data and
// schema additions are refused with QUOTA_EXCEEDED and change nothing;
// deletes pass, and once under the quota writes pass again. A reload
// changes the quota at run time.
func TestDataQuota(t *testing.T) {
	const quota = 2000
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) { c.Limits.MaxDataBytes = quota }})
	cc := dial(t, cl.Members[0].Addr)
	createKV(t, cc, "kv")
	data, schema := pb.NewDataServiceClient(cc), pb.NewSchemaServiceClient(cc)
	key := func(i int) string { return fmt.Sprintf("%03d", i) + strings.Repeat("x", 197) }
	upsert := func(i int) error {
		_, err := data.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(key(i))}})
		return err
	}
	quotaErr := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || reason(err) != pb.ReasonQuotaExceeded || !strings.Contains(err.Error(), "--data-quota-bytes") {
			t.Fatalf("%s over the quota: %v (reason %q), want ResourceExhausted, QUOTA_EXCEEDED, naming the setting", what, err, reason(err))
		}
	}

	refused := -1
	for i := 0; i < 20; i++ {
		err := upsert(i)
		if err == nil {
			continue
		}
		quotaErr("an upsert", err)
		refused = i
		break
	}
	if refused < 5 {
		t.Fatalf("first refusal at write %d: the quota of %d bytes should admit about ten 200-byte rows", refused, quota)
	}
	// The refused write left nothing behind.
	if r, err := data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str(key(refused))}); err != nil || r.Found {
		t.Fatalf("the refused row: found %v, %v; want absent", r.GetFound(), err)
	}
	_, err := schema.CreateIndex(ctxT(t, 5*time.Second), &pb.CreateIndexRequest{Table: "kv", Index: &pb.IndexSchema{Name: "by_k", Fields: []string{"k"}}})
	quotaErr("CreateIndex", err)
	_, err = schema.CreateTable(ctxT(t, 5*time.Second), &pb.CreateTableRequest{Schema: &pb.TableSchema{
		Name: "more", PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}}}})
	quotaErr("CreateTable", err)
	// A transaction that only deletes passes, and frees room.
	var dels []*pb.Op
	for i := 0; i < 3; i++ {
		dels = append(dels, &pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "kv", Key: str(key(i))}}})
	}
	if _, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: dels}); err != nil {
		t.Fatalf("deletes over the quota: %v", err)
	}
	if err := upsert(refused); err != nil {
		t.Fatalf("a write after deletes brought the data under the quota: %v", err)
	}
	// Filled again, it refuses again.
	full := false
	for i := 100; i < 140 && !full; i++ {
		if err := upsert(i); err != nil {
			quotaErr("an upsert after refilling", err)
			full = true
		}
	}
	if !full {
		t.Fatal("the quota stopped refusing")
	}
	// Raising the quota at run time admits writes again.
	lim := server.DefaultLimits()
	lim.MaxDataBytes = 10 * quota
	if err := cl.Members[0].Server.Reload(lim, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := upsert(500); err != nil {
		t.Fatalf("a write after the quota was raised: %v", err)
	}
}
