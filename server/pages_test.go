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
)

// A page token altered by the client (its position, its revision) is
// refused: it was not issued by this member.
func TestAlteredPageTokenRefused(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{})
	cc := dial(t, cl.Members[0].Addr)
	createKV(t, cc, "kv")
	data := pb.NewDataServiceClient(cc)
	for i := 0; i < 10; i++ {
		if _, err := data.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 3})
	if err != nil || len(first.NextPageToken) == 0 {
		t.Fatalf("first page: %v", err)
	}
	tok := first.NextPageToken
	// The position is the encoded key of the last row, just before the
	// token's end: "2" (a string key: tag 0x06, "2", 0x00) -> "5".
	at := strings.LastIndex(string(tok), "\x062\x00")
	if at < 0 {
		t.Fatalf("no position %q in token %x", "2", tok)
	}
	for name, alter := range map[string]func([]byte){
		"position": func(b []byte) { b[at+1] = '5' },
		"revision": func(b []byte) { b[9]++ }, // after the version byte and the member's id
	} {
		b := append([]byte(nil), tok...)
		alter(b)
		_, err := data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 3, PageToken: b})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "page_token was not issued by this member or was altered") {
			t.Errorf("token with its %s altered: %v", name, err)
		}
	}
	second, err := data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 3, PageToken: tok})
	if err != nil || len(second.Rows) != 3 || second.Rows[0].Fields["k"].GetStringValue() != "3" {
		t.Fatalf("the genuine token: %v %v", err, second.GetRows())
	}
}

// One connection that opens many scans and never finishes them cannot
// make another connection's scan lose its view: its pins are bounded per
// connection, and a full table gives up the pins of whoever holds most.
func TestPinsOfOneConnectionSpareAnothersScan(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{})
	hog := pb.NewDataServiceClient(dial(t, cl.Members[0].Addr))
	other := pb.NewDataServiceClient(dial(t, cl.Members[0].Addr))
	createKV(t, dial(t, cl.Members[0].Addr), "kv")
	for _, k := range []string{"a", "b"} {
		if _, err := hog.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(k)}}); err != nil {
			t.Fatal(err)
		}
	}
	pins := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			// A write between scans: each first page pins another revision.
			if _, err := hog.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprint("h", i%20))}}); err != nil {
				t.Fatal(err)
			}
			if r, err := hog.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 1}); err != nil || len(r.NextPageToken) == 0 {
				t.Fatalf("one-row scan: %v", err)
			}
		}
	}
	// More than the member-wide default of 256 pinned views.
	pins(270)
	first, err := other.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 5})
	if err != nil || len(first.NextPageToken) == 0 {
		t.Fatalf("first page: %v", err)
	}
	pins(270)
	if _, err := other.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 5, PageToken: first.NextPageToken}); err != nil {
		t.Fatalf("second page after another connection pinned 540 views: %v", err)
	}
}
