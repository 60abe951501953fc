package chaos

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/anishathalye/porcupine"

	"github.com/memdbd/memdbd/client"
)

// Workload is one kind of concurrent client activity with its checker.
type Workload interface {
	Name() string
	// Setup creates the workload's tables and initial rows.
	Setup(ctx context.Context, c *client.Client) error
	// Step performs one operation as worker w, recording its outcome.
	Step(ctx context.Context, c *client.Client, w int, rng *rand.Rand, rec *Recorder)
	// Check judges the outcome after the run, on a healed cluster.
	Check(ctx context.Context, c *client.Client, rec *Recorder) Verdict
}

// Verdict is one checker's judgement.
type Verdict struct {
	Checker string
	OK      bool
	Detail  string
}

// unknownErr tells whether a failed write may have been applied. The
// client retried within its deadline; what is left is either a definite
// refusal or an unknown outcome.
func unknownErr(err error) bool {
	return !errors.Is(err, client.ErrVersionMismatch) && !errors.Is(err, client.ErrRowExists) &&
		!errors.Is(err, client.ErrInvalidArgument) && !errors.Is(err, client.ErrTableNotFound)
}

// --- register: read, write and compare-and-set on a few keys ---

type registerWorkload struct {
	keys  int
	table string
}

type regInput struct {
	Op       string // "read", "write", "cas"
	Key      int
	Arg, New int64
}

type regOutput struct {
	Value   int64
	OK      bool // cas: swapped
	Unknown bool
}

func (registerWorkload) Name() string { return "register" }

func (w registerWorkload) Setup(ctx context.Context, c *client.Client) error {
	if _, err := c.CreateTable(ctx, client.TableSchema{Name: w.table, PrimaryKey: "k",
		Fields: []client.FieldSchema{{Name: "k", Type: client.TypeInt}, {Name: "v", Type: client.TypeInt, Required: true}}}); err != nil {
		return err
	}
	for k := 0; k < w.keys; k++ {
		if _, err := c.Upsert(ctx, w.table, client.Fields{"k": client.Int(int64(k)), "v": client.Int(0)}); err != nil {
			return err
		}
	}
	return nil
}

func (w registerWorkload) Step(ctx context.Context, c *client.Client, worker int, rng *rand.Rand, rec *Recorder) {
	in := regInput{Key: rng.IntN(w.keys)}
	key := client.Int(int64(in.Key))
	call := rec.Now()
	var out regOutput
	var err error
	switch r := rng.IntN(10); {
	case r < 5:
		in.Op = "read"
		var row client.Row
		row, err = c.Get(ctx, w.table, key)
		out.Value = row.Fields["v"].AsInt()
		if err != nil {
			rec.count("register", false, false)
			return // a failed read observed nothing
		}
	case r < 8:
		in.Op, in.Arg = "write", rng.Int64N(5)
		_, err = c.Upsert(ctx, w.table, client.Fields{"k": key, "v": client.Int(in.Arg)})
	default:
		in.Op, in.Arg, in.New = "cas", rng.Int64N(5), rng.Int64N(5)
		var res client.TxnResult
		res, err = c.Txn().If(client.FieldIs(w.table, key, "v", client.Equal, client.Int(in.Arg))).
			Then(client.UpdateOp(w.table, key, client.Fields{"v": client.Int(in.New)}, nil)).Commit(ctx)
		out.OK = res.Succeeded
	}
	ret := rec.Now()
	if err != nil {
		out.Unknown = true
		ret = -1
	} else if in.Op != "read" {
		rec.writeOK(call, ret)
	}
	rec.count("register", err == nil, err != nil)
	rec.addOp(porcupine.Operation{ClientId: worker, Input: in, Call: call, Output: out, Return: ret})
}

// registerModel is a map of integer registers, partitioned by key.
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).Key
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() interface{} { return int64(0) },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, in, out := state.(int64), input.(regInput), output.(regOutput)
		switch in.Op {
		case "read":
			return out.Value == s, s
		case "write":
			return true, in.Arg
		case "cas":
			if out.Unknown {
				if s == in.Arg {
					return true, in.New
				}
				return true, s
			}
			if out.OK {
				return s == in.Arg, in.New
			}
			return s != in.Arg, s
		}
		return false, s
	},
	DescribeOperation: func(input, output interface{}) string {
		in, ok1 := input.(regInput)
		out, ok2 := output.(regOutput)
		if !ok1 || !ok2 {
			return fmt.Sprint(input, output)
		}
		switch in.Op {
		case "read":
			return fmt.Sprintf("read(k%d) -> %d", in.Key, out.Value)
		case "write":
			return fmt.Sprintf("write(k%d, %d)%s", in.Key, in.Arg, unknownMark(out.Unknown))
		}
		return fmt.Sprintf("cas(k%d, %d -> %d) = %v%s", in.Key, in.Arg, in.New, out.OK, unknownMark(out.Unknown))
	},
	DescribeState: func(state interface{}) string { return fmt.Sprint(state) },
}

func unknownMark(u bool) string {
	if u {
		return " (outcome unknown)"
	}
	return ""
}

// Check is done by porcupine in Run, over the whole history.
func (registerWorkload) Check(context.Context, *client.Client, *Recorder) Verdict {
	return Verdict{Checker: "register", OK: true, Detail: "checked for linearizability with porcupine"}
}

// --- bank: transfers keep the total ---

type bankWorkload struct {
	accounts int
	total    int64
	table    string

	mu         sync.Mutex
	violations []string
	reads      atomic.Int64
}

func (w *bankWorkload) Name() string { return "bank" }

func (w *bankWorkload) Setup(ctx context.Context, c *client.Client) error {
	if _, err := c.CreateTable(ctx, client.TableSchema{Name: w.table, PrimaryKey: "id",
		Fields: []client.FieldSchema{{Name: "id", Type: client.TypeInt}, {Name: "balance", Type: client.TypeInt, Required: true}}}); err != nil {
		return err
	}
	tx := c.Txn()
	for a := 0; a < w.accounts; a++ {
		tx.Then(client.InsertOp(w.table, client.Fields{"id": client.Int(int64(a)), "balance": client.Int(w.total / int64(w.accounts))}))
	}
	_, err := tx.Commit(ctx)
	return err
}

func (w *bankWorkload) Step(ctx context.Context, c *client.Client, worker int, rng *rand.Rand, rec *Recorder) {
	if rng.IntN(3) == 0 {
		if err := w.audit(ctx, c, "read"); err != nil {
			rec.count("bank", false, false)
			return
		}
		rec.count("bank", true, false)
		return
	}
	from, to := rng.IntN(w.accounts), rng.IntN(w.accounts-1)
	if to >= from {
		to++
	}
	rows, err := c.BatchGet(ctx, w.table, []client.Value{client.Int(int64(from)), client.Int(int64(to))})
	if err != nil || rows[0] == nil || rows[1] == nil {
		rec.count("bank", false, false)
		return
	}
	fb, tb := rows[0].Fields["balance"].AsInt(), rows[1].Fields["balance"].AsInt()
	amount := rng.Int64N(10) + 1
	if fb < amount {
		return
	}
	call := rec.Now()
	res, err := c.Txn().
		If(client.FieldIs(w.table, client.Int(int64(from)), "balance", client.Equal, client.Int(fb)),
			client.FieldIs(w.table, client.Int(int64(to)), "balance", client.Equal, client.Int(tb))).
		Then(client.UpdateOp(w.table, client.Int(int64(from)), client.Fields{"balance": client.Int(fb - amount)}, nil),
			client.UpdateOp(w.table, client.Int(int64(to)), client.Fields{"balance": client.Int(tb + amount)}, nil)).
		Commit(ctx)
	if err == nil && res.Succeeded {
		rec.writeOK(call, rec.Now())
	}
	rec.count("bank", err == nil, err != nil && unknownErr(err))
}

// audit reads every account in one scan (one revision) and checks the
// invariant.
func (w *bankWorkload) audit(ctx context.Context, c *client.Client, when string) error {
	page, err := c.Scan(ctx, w.table, client.ScanOptions{})
	if err != nil {
		return err
	}
	w.auditPage(when, page)
	return nil
}

// auditPage checks one scan of every account against the invariant (split
// from audit so that the checker can be tested on planted reads).
func (w *bankWorkload) auditPage(when string, page client.Page) {
	w.reads.Add(1)
	var sum int64
	neg := false
	for _, r := range page.Rows {
		b := r.Fields["balance"].AsInt()
		sum += b
		neg = neg || b < 0
	}
	if sum != w.total || neg || len(page.Rows) != w.accounts {
		w.mu.Lock()
		w.violations = append(w.violations, fmt.Sprintf("%s at revision %d on %s: %d accounts, total %d, negative %v",
			when, page.Header.Revision, page.Header.NodeID, len(page.Rows), sum, neg))
		w.mu.Unlock()
	}
}

func (w *bankWorkload) Check(ctx context.Context, c *client.Client, _ *Recorder) Verdict {
	return w.verdict(w.audit(ctx, c, "final read"))
}

// verdict judges every audit so far, err being the final read's (split
// from Check so that the checker can be tested without a cluster).
func (w *bankWorkload) verdict(err error) Verdict {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		return Verdict{Checker: "bank", Detail: "final read failed: " + err.Error()}
	}
	if len(w.violations) > 0 {
		return Verdict{Checker: "bank", Detail: strings.Join(w.violations[:min(5, len(w.violations))], "; ")}
	}
	return Verdict{Checker: "bank", OK: true, Detail: fmt.Sprintf("%d reads, total always %d, no negative balance", w.reads.Load(), w.total)}
}

// --- set: unique inserts, each acknowledged one present, none applied twice ---

type setWorkload struct {
	table    string
	mu       sync.Mutex
	acked    map[string]uint64 // key -> revision acknowledged
	unknown  map[string]bool
	dupes    []string
	sequence []atomic.Int64
}

func newSetWorkload(workers int, table string) *setWorkload {
	return &setWorkload{table: table, acked: map[string]uint64{}, unknown: map[string]bool{}, sequence: make([]atomic.Int64, workers)}
}

func (w *setWorkload) Name() string { return "set" }

func (w *setWorkload) Setup(ctx context.Context, c *client.Client) error {
	_, err := c.CreateTable(ctx, client.TableSchema{Name: w.table, PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
	return err
}

func (w *setWorkload) Step(ctx context.Context, c *client.Client, worker int, _ *rand.Rand, rec *Recorder) {
	k := fmt.Sprintf("w%d-%06d", worker, w.sequence[worker].Add(1))
	call := rec.Now()
	m, err := c.Insert(ctx, w.table, client.Fields{"k": client.String(k)})
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil:
		w.acked[k] = m.ModRevision
		rec.writeOK(call, rec.Now())
	case errors.Is(err, client.ErrRowExists):
		// Only this worker ever inserts k, once: the cluster applied an
		// earlier attempt and then applied (or refused) the retry again.
		w.dupes = append(w.dupes, k)
	default:
		w.unknown[k] = true
	}
	rec.count("set", err == nil, err != nil && unknownErr(err))
}

func (w *setWorkload) Check(ctx context.Context, c *client.Client, _ *Recorder) Verdict {
	return w.check(c.ScanAll(ctx, w.table, client.ScanOptions{Limit: 5000}))
}

// check judges the final scan of the table against what the workload saw
// (split from Check so that the checker can be tested without a cluster).
func (w *setWorkload) check(rows iter.Seq2[client.Row, error]) Verdict {
	present := map[string]bool{}
	for row, err := range rows {
		if err != nil {
			return Verdict{Checker: "set", Detail: "final scan failed: " + err.Error()}
		}
		k := row.Fields["k"].AsString()
		if row.Version != 1 {
			return Verdict{Checker: "set", Detail: fmt.Sprintf("row %s has version %d: applied more than once", k, row.Version)}
		}
		present[k] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var lost []string
	for k := range w.acked {
		if !present[k] {
			lost = append(lost, k)
		}
	}
	if len(lost) > 0 || len(w.dupes) > 0 {
		return Verdict{Checker: "set", Detail: fmt.Sprintf("%d acknowledged inserts lost (%v), %d answered AlreadyExists on a retry (%v)",
			len(lost), lost[:min(5, len(lost))], len(w.dupes), w.dupes[:min(5, len(w.dupes))])}
	}
	unknownPresent := 0
	for k := range w.unknown {
		if present[k] {
			unknownPresent++
		}
	}
	return Verdict{Checker: "set", OK: true, Detail: fmt.Sprintf("%d acknowledged inserts all present once; %d of %d unknown ones applied",
		len(w.acked), unknownPresent, len(w.unknown))}
}

// --- counter: compare-and-set increments, within bounds ---

type counterWorkload struct {
	table          string
	acked, unknown atomic.Int64
}

func (w *counterWorkload) Name() string { return "counter" }

func (w *counterWorkload) Setup(ctx context.Context, c *client.Client) error {
	if _, err := c.CreateTable(ctx, client.TableSchema{Name: w.table, PrimaryKey: "k",
		Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}, {Name: "n", Type: client.TypeInt, Required: true}}}); err != nil {
		return err
	}
	_, err := c.Insert(ctx, w.table, client.Fields{"k": client.String("c"), "n": client.Int(0)})
	return err
}

func (w *counterWorkload) Step(ctx context.Context, c *client.Client, _ int, _ *rand.Rand, rec *Recorder) {
	row, err := c.Get(ctx, w.table, client.String("c"))
	if err != nil {
		rec.count("counter", false, false)
		return
	}
	n := row.Fields["n"].AsInt()
	call := rec.Now()
	res, err := c.Txn().If(client.VersionIs(w.table, client.String("c"), client.Equal, row.Version)).
		Then(client.UpdateOp(w.table, client.String("c"), client.Fields{"n": client.Int(n + 1)}, nil)).Commit(ctx)
	switch {
	case err != nil:
		w.unknown.Add(1)
	case res.Succeeded:
		w.acked.Add(1)
		rec.writeOK(call, rec.Now())
	}
	rec.count("counter", err == nil, err != nil)
}

func (w *counterWorkload) Check(ctx context.Context, c *client.Client, _ *Recorder) Verdict {
	row, err := c.Get(ctx, w.table, client.String("c"))
	if err != nil {
		return Verdict{Checker: "counter", Detail: "final read failed: " + err.Error()}
	}
	return w.verdict(row)
}

// verdict judges the counter's final row against the increments (split
// from Check so that the checker can be tested without a cluster).
func (w *counterWorkload) verdict(row client.Row) Verdict {
	n, a, u := row.Fields["n"].AsInt(), w.acked.Load(), w.unknown.Load()
	ok := n >= a && n <= a+u && uint64(n)+1 == row.Version
	return Verdict{Checker: "counter", OK: ok, Detail: fmt.Sprintf("counter %d (version %d); %d acknowledged increments, %d unknown: want %d..%d",
		n, row.Version, a, u, a, a+u)}
}
