package server_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

// auditRecorder keeps the attributes of the audit log's records.
type auditRecorder struct {
	mu      sync.Mutex
	attrs   []slog.Attr // from WithAttrs
	records []map[string]string
}

func (a *auditRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (a *auditRecorder) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	for _, at := range a.attrs {
		m[at.Key] = at.Value.String()
	}
	r.Attrs(func(at slog.Attr) bool { m[at.Key] = at.Value.String(); return true })
	if m["log"] == "audit" {
		a.mu.Lock()
		a.records = append(a.records, m)
		a.mu.Unlock()
	}
	return nil
}
func (a *auditRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &auditChild{root: a, attrs: append(append([]slog.Attr(nil), a.attrs...), as...)}
}
func (a *auditRecorder) WithGroup(string) slog.Handler { return a }

// auditChild is a recorder with attributes of its own, sharing records.
type auditChild struct {
	root  *auditRecorder
	attrs []slog.Attr
}

func (c *auditChild) Enabled(context.Context, slog.Level) bool { return true }
func (c *auditChild) Handle(ctx context.Context, r slog.Record) error {
	r2 := r.Clone()
	r2.AddAttrs(c.attrs...)
	return c.root.Handle(ctx, r2)
}
func (c *auditChild) WithAttrs(as []slog.Attr) slog.Handler {
	return &auditChild{root: c.root, attrs: append(append([]slog.Attr(nil), c.attrs...), as...)}
}
func (c *auditChild) WithGroup(string) slog.Handler { return c }

func (a *auditRecorder) find(method, code string) map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.records {
		if r["method"] == method && r["code"] == code {
			return r
		}
	}
	return nil
}

// Control-plane calls are in the audit log with the caller, its address
// and the outcome, refused ones included; data calls are not.
func TestAuditLog(t *testing.T) {
	rec := &auditRecorder{}
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) { c.Logger = slog.New(rec) }})
	cc := dial(t, cl.Members[0].Addr)
	createKV(t, cc, "kv")
	if _, err := pb.NewSchemaServiceClient(cc).DropTable(ctxT(t, 5*time.Second), &pb.DropTableRequest{Table: "nope"}); err == nil {
		t.Fatal("dropping a missing table succeeded")
	}
	if _, err := pb.NewClusterServiceClient(cc).Snapshot(ctxT(t, 5*time.Second), &pb.SnapshotRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewDataServiceClient(cc).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("a")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][2]string{
		{pb.SchemaService_CreateTable_FullMethodName, "OK"},
		{pb.SchemaService_DropTable_FullMethodName, "NotFound"},
		{pb.ClusterService_Snapshot_FullMethodName, "OK"},
	} {
		r := rec.find(want[0], want[1])
		if r == nil {
			t.Fatalf("no audit record of %s ending %s in %v", want[0], want[1], rec.records)
		}
		if r["identity"] != "anonymous" || r["source"] == "" || r["request_id"] == "" {
			t.Fatalf("audit record %v", r)
		}
	}
	if rec.find(pb.DataService_Get_FullMethodName, "OK") != nil {
		t.Fatal("a data call is in the audit log")
	}
}
