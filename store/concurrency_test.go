package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Readers check views while one writer commits batches of transfers. Run
// with -race.

const (
	accounts   = 40
	initialBal = 1000
)

func accountsSchema() TableSchema {
	return TableSchema{
		Name:       "acct",
		PrimaryKey: "id",
		Fields: []FieldSchema{
			{Name: "id", Type: TypeInt},
			{Name: "bal", Type: TypeInt, Required: true},
			{Name: "owner", Type: TypeString},
		},
		Indexes: []IndexSchema{
			{Name: "by_bal", Fields: []string{"bal"}},
			{Name: "by_owner", Fields: []string{"owner"}, Unique: true},
		},
	}
}

func newAccounts(tb testing.TB) (*Store, uint64) {
	tb.Helper()
	s, err := New(Options{})
	if err != nil {
		tb.Fatal(err)
	}
	b := s.Begin()
	if err := b.CreateTable(1, accountsSchema()); err != nil {
		tb.Fatal(err)
	}
	var ops []Op
	for i := 0; i < accounts; i++ {
		ops = append(ops, insOp("acct", flds("id", Int(int64(i)), "bal", Int(initialBal), "owner", String(fmt.Sprintf("o%02d", i)))))
	}
	if _, err := b.Txn(2, Txn{Then: ops}); err != nil {
		tb.Fatal(err)
	}
	b.Commit()
	return s, 2
}

// checkAccounts checks that a view is internally consistent: the balances
// add up, the indexes agree with the primary key, and Gets agree with
// scans. It returns the primary scan.
func checkAccounts(v *View) ([]Row, error) {
	res, err := v.Scan("acct", ScanOptions{})
	if err != nil {
		return nil, err
	}
	rows := res.Rows
	var sum int64
	byID := map[int64]Row{}
	for _, r := range rows {
		bal, _ := r.Get("bal")
		sum += bal.AsInt()
		id, _ := r.Get("id")
		byID[id.AsInt()] = r
	}
	if sum != accounts*initialBal {
		return nil, fmt.Errorf("revision %d: balances add up to %d", v.Revision(), sum)
	}
	// The index on bal holds the same rows, ordered by balance.
	ix, err := v.Scan("acct", ScanOptions{Index: "by_bal"})
	if err != nil {
		return nil, err
	}
	if len(ix.Rows) != len(rows) {
		return nil, fmt.Errorf("revision %d: %d rows by bal, %d by id", v.Revision(), len(ix.Rows), len(rows))
	}
	var prev int64 = -1 << 63
	for _, r := range ix.Rows {
		id, _ := r.Get("id")
		bal, _ := r.Get("bal")
		if bal.AsInt() < prev {
			return nil, fmt.Errorf("revision %d: by_bal out of order", v.Revision())
		}
		prev = bal.AsInt()
		if p, ok := byID[id.AsInt()]; !ok || !sameRow(p, r) {
			return nil, fmt.Errorf("revision %d: index row %d differs from the primary row", v.Revision(), id.AsInt())
		}
	}
	n, err := v.Count("acct", ScanOptions{Index: "by_owner"})
	if err != nil {
		return nil, err
	}
	owners := 0
	for _, r := range rows {
		if o, ok := r.Get("owner"); ok && !o.IsNull() {
			owners++
		}
	}
	if n != owners {
		return nil, fmt.Errorf("revision %d: %d by_owner entries, %d owners", v.Revision(), n, owners)
	}
	// A few point reads.
	for _, id := range []int64{0, 7, accounts - 1, accounts + 5} {
		r, found, err := v.Get("acct", Int(id))
		if err != nil {
			return nil, err
		}
		p, ok := byID[id]
		if found != ok || (found && !sameRow(p, r)) {
			return nil, fmt.Errorf("revision %d: Get(%d) disagrees with the scan", v.Revision(), id)
		}
	}
	// Rows (what a snapshot reads) sees the same rows.
	count := 0
	_ = v.Rows("acct", func(string) bool { count++; return true })
	if count != len(rows) {
		return nil, fmt.Errorf("revision %d: Rows saw %d rows, Scan %d", v.Revision(), count, len(rows))
	}
	return rows, nil
}

func TestConcurrentReadersAndWriter(t *testing.T) {
	s, rev := newAccounts(t)
	const readers = 3
	minChecks, minBatches := int64(200), 2000
	if testing.Short() {
		minChecks, minBatches = 10, 100
	}
	var (
		done    atomic.Bool
		checks  atomic.Int64
		seen    [readers]atomic.Int64 // distinct revisions each reader checked
		wg      sync.WaitGroup
		errs    = make(chan error, readers+1)
		started sync.WaitGroup
	)
	started.Add(readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			started.Done()
			held := s.View()
			heldRows, err := checkAccounts(held)
			if err != nil {
				errs <- err
				return
			}
			heldHash := held.Hash()
			var lastRev uint64
			revs := map[uint64]bool{}
			for n := 0; !done.Load() || n < 5; n++ {
				v := s.View()
				if v.Revision() < lastRev {
					errs <- fmt.Errorf("reader %d: revision went back from %d to %d", i, lastRev, v.Revision())
					return
				}
				lastRev = v.Revision()
				revs[lastRev] = true
				seen[i].Store(int64(len(revs)))
				h := v.Hash()
				if _, err := checkAccounts(v); err != nil {
					errs <- fmt.Errorf("reader %d: %w", i, err)
					return
				}
				if v.Hash() != h {
					errs <- fmt.Errorf("reader %d: view at %d changed while read", i, v.Revision())
					return
				}
				checks.Add(1)
			}
			// The view taken first has not changed.
			if held.Hash() != heldHash {
				errs <- fmt.Errorf("reader %d: held view changed", i)
				return
			}
			rows, err := checkAccounts(held)
			if err != nil || !slices.EqualFunc(rows, heldRows, sameRow) {
				errs <- fmt.Errorf("reader %d: held view reads differently now (%v)", i, err)
				return
			}
			if len(revs) < 2 {
				errs <- fmt.Errorf("reader %d saw only revisions %v", i, revs)
			}
		}(i)
	}
	started.Wait()

	r := rand.New(rand.NewPCG(11, 12))
	deadline := time.Now().Add(2 * time.Minute)
	batches := 0
	readersBehind := func() bool {
		for i := range seen {
			if seen[i].Load() < 3 {
				return true
			}
		}
		return false
	}
	for ; batches < minBatches || checks.Load() < minChecks || readersBehind(); batches++ {
		if time.Now().After(deadline) {
			t.Fatalf("readers made only %d checks in %d batches", checks.Load(), batches)
		}
		b := s.Begin()
		for k := 1 + r.IntN(4); k > 0; k-- {
			rev++
			from, to := Int(int64(r.IntN(accounts))), Int(int64(r.IntN(accounts)))
			amt := int64(r.IntN(50))
			switch r.IntN(10) {
			case 0:
				// A transfer followed by a failing operation: undone.
				_, err := b.Txn(rev, Txn{Then: []Op{
					updOp("acct", from, flds("bal", Int(-amt))),
					updOp("acct", to, flds("bal", Int(amt))),
					insOp("acct", flds("id", Int(0), "bal", Int(0))),
				}})
				if !errors.Is(err, ErrRowExists) {
					t.Fatalf("failing txn: %v", err)
				}
			case 1:
				// Swap two owners through a third value (unique index).
				a, b2 := Int(int64(r.IntN(accounts))), Int(int64(r.IntN(accounts)))
				if a == b2 {
					continue
				}
				res, err := b.Txn(rev, Txn{Then: []Op{getOp("acct", a), getOp("acct", b2)}})
				if err != nil {
					t.Fatal(err)
				}
				oa, _ := res.Results[0].Row.Get("owner")
				ob, _ := res.Results[1].Row.Get("owner")
				rev++
				if _, err := b.Txn(rev, Txn{Then: []Op{
					updOp("acct", a, nil, "owner"),
					updOp("acct", b2, flds("owner", oa)),
					updOp("acct", a, flds("owner", ob)),
				}}); err != nil {
					t.Fatal(err)
				}
			default:
				// Move amt from one account to another, with a
				// compare-and-set on both versions.
				res, err := b.Txn(rev, Txn{Then: []Op{getOp("acct", from), getOp("acct", to)}})
				if err != nil {
					t.Fatal(err)
				}
				fb, _ := res.Results[0].Row.Get("bal")
				tb, _ := res.Results[1].Row.Get("bal")
				if from == to {
					continue
				}
				rev++
				res, err = b.Txn(rev, Txn{
					Conditions: []Condition{
						{Table: "acct", Key: from, Test: CondVersion, Op: CmpEqual, Number: res.Results[0].Row.Version},
						{Table: "acct", Key: to, Test: CondVersion, Op: CmpEqual, Number: res.Results[1].Row.Version},
					},
					Then: []Op{
						updOp("acct", from, flds("bal", Int(fb.AsInt()-amt))),
						updOp("acct", to, flds("bal", Int(tb.AsInt()+amt))),
					},
				})
				if err != nil || !res.Succeeded {
					t.Fatalf("transfer: %+v %v", res, err)
				}
			}
		}
		b.Commit()
		if batches%50 == 25 {
			// Index changes while readers read; by_bal stays.
			b := s.Begin()
			rev++
			if err := b.DropIndex(rev, "acct", "by_owner"); err != nil {
				t.Fatal(err)
			}
			rev++
			if err := b.CreateIndex(rev, "acct", IndexSchema{Name: "by_owner", Fields: []string{"owner"}, Unique: true}); err != nil {
				t.Fatal(err)
			}
			b.Commit()
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := checkAccounts(s.View()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches, %d reader checks", batches, checks.Load())
}

// While one goroutine iterates a view's rows (a snapshot), the writer
// replaces every row; the iteration sees exactly the view's rows.
func TestSnapshotIterationDuringWrites(t *testing.T) {
	s, rev := newAccounts(t)
	v := s.View()
	var want []string
	_ = v.Rows("acct", func(raw string) bool { want = append(want, raw); return true })

	var iterated atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var got []string
			_ = v.Rows("acct", func(raw string) bool { got = append(got, raw); return true })
			if !slices.Equal(got, want) {
				errs <- fmt.Errorf("iteration %d saw other rows", iterated.Load())
				return
			}
			iterated.Add(1)
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	for i := 0; i < 200 || iterated.Load() < 20; i++ {
		if i > 100000 {
			t.Fatal("the reader does not progress")
		}
		b := s.Begin()
		rev++
		var ops []Op
		for id := 0; id < accounts; id += 1 + i%3 {
			ops = append(ops, updOp("acct", Int(int64(id)), flds("bal", Int(int64(i)))))
		}
		if _, err := b.Txn(rev, Txn{Then: ops[:min(len(ops), 40)]}); err != nil {
			t.Fatal(err)
		}
		rev++
		if _, err := b.Txn(rev, Txn{Then: []Op{delOp("acct", Int(int64(i%accounts))), upsOp("acct", flds("id", Int(int64(i%accounts)), "bal", Int(1)))}}); err != nil {
			t.Fatal(err)
		}
		b.Commit()
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
