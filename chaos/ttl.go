package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/memdbd/memdbd/client"
)

// ttlWorkload writes rows with a time to live, refreshes some and reads
// them back through every fault. Every member runs on this machine's
// clock, so expiry is checked exactly (within a small margin for the
// clock itself): a read that starts after a row's expiry must not return
// it, a read that ends before it must, and after the run every expiring
// row must have been deleted by the log, whatever leader changes
// happened in between.
type ttlWorkload struct {
	table      string
	mu         sync.Mutex
	keys       [][]ttlKey // per worker
	violations []string
	latest     time.Time // latest expiry any write may have set
	reads      int
	seq        []atomic.Int64
}

type ttlKey struct {
	k       string
	expires time.Time
	certain bool // the last write's outcome (and so the expiry) is known
}

// ttlMargin absorbs clock adjustments between the test and the members.
const ttlMargin = 20 * time.Millisecond

func newTTLWorkload(workers int, table string) *ttlWorkload {
	return &ttlWorkload{table: table, keys: make([][]ttlKey, workers), seq: make([]atomic.Int64, workers)}
}

func (w *ttlWorkload) Name() string { return "ttl" }

func (w *ttlWorkload) Setup(ctx context.Context, c *client.Client) error {
	_, err := c.CreateTable(ctx, client.TableSchema{Name: w.table, PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
	return err
}

func (w *ttlWorkload) violate(format string, args ...any) {
	w.mu.Lock()
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func (w *ttlWorkload) bound(t time.Time) {
	w.mu.Lock()
	if t.After(w.latest) {
		w.latest = t
	}
	w.mu.Unlock()
}

func (w *ttlWorkload) Step(ctx context.Context, c *client.Client, worker int, rng *rand.Rand, rec *Recorder) {
	w.mu.Lock()
	mine := w.keys[worker]
	w.mu.Unlock()
	ttl := time.Duration(500+rng.IntN(2500)) * time.Millisecond
	var live []int
	for i, k := range mine {
		if k.certain && time.Until(k.expires) > 200*time.Millisecond {
			live = append(live, i)
		}
	}
	op := rng.IntN(3)
	if len(live) == 0 {
		op = 0
	}
	t0 := time.Now()
	w.bound(t0.Add(ttl + 5*time.Second)) // an unknown outcome may apply a little later
	switch op {
	case 0:
		k := fmt.Sprintf("w%d-%06d", worker, w.seq[worker].Add(1))
		m, err := c.Insert(ctx, w.table, client.Fields{"k": client.String(k)}, client.WithTTL(ttl))
		key := ttlKey{k: k, expires: m.ExpiresAt, certain: err == nil}
		if err == nil && (m.ExpiresAt.Before(t0.Add(ttl-ttlMargin)) || m.ExpiresAt.After(time.Now().Add(ttl+ttlMargin))) {
			w.violate("insert of %s with ttl %v between %v and %v got expiry %v", k, ttl, t0, time.Now(), m.ExpiresAt)
		}
		w.mu.Lock()
		w.keys[worker] = append(w.keys[worker], key)
		w.mu.Unlock()
		rec.count("ttl", err == nil, err != nil && unknownErr(err))
	case 1:
		i := live[rng.IntN(len(live))]
		k := mine[i]
		m, err := c.Touch(ctx, w.table, client.String(k.k), ttl)
		t1 := time.Now()
		if errors.Is(err, client.ErrNotFound) && t1.Before(k.expires.Add(-ttlMargin)) {
			w.violate("touch of %s found no row at %v, before its expiry %v", k.k, t1, k.expires)
		}
		w.mu.Lock()
		if err == nil {
			w.keys[worker][i].expires = m.ExpiresAt
		} else if !errors.Is(err, client.ErrNotFound) {
			w.keys[worker][i].certain = false
		}
		w.mu.Unlock()
		rec.count("ttl", err == nil, err != nil && unknownErr(err) && !errors.Is(err, client.ErrNotFound))
	case 2:
		// Pick any known key, live or not: reads around the expiry are the
		// interesting ones.
		i := rng.IntN(len(mine))
		k := mine[i]
		if !k.certain {
			return
		}
		_, err := c.Get(ctx, w.table, client.String(k.k))
		w.judgeRead(k, t0, time.Now(), err)
		if err == nil || errors.Is(err, client.ErrNotFound) {
			w.mu.Lock()
			w.reads++
			w.mu.Unlock()
		}
		rec.count("ttl-read", err == nil || errors.Is(err, client.ErrNotFound), false)
	}
}

// judgeRead records a violation when a read of k between t0 and t1 that
// ended with err contradicts k's expiry (split from Step so that the
// checker can be tested on planted reads).
func (w *ttlWorkload) judgeRead(k ttlKey, t0, t1 time.Time, err error) {
	switch {
	case err == nil && t0.After(k.expires.Add(ttlMargin)):
		w.violate("read of %s started at %v returned the row, past its expiry %v", k.k, t0, k.expires)
	case errors.Is(err, client.ErrNotFound) && t1.Before(k.expires.Add(-ttlMargin)):
		w.violate("read of %s ended at %v without the row, before its expiry %v", k.k, t1, k.expires)
	}
}

func (w *ttlWorkload) Check(ctx context.Context, c *client.Client, _ *Recorder) Verdict {
	w.mu.Lock()
	latest, violations, reads := w.latest, w.violations, w.reads
	n := 0
	for _, ks := range w.keys {
		n += len(ks)
	}
	w.mu.Unlock()
	if len(violations) > 0 {
		return Verdict{Checker: "ttl", Detail: fmt.Sprintf("%d violations: %v", len(violations), violations[:min(5, len(violations))])}
	}
	// Every row written expires; once the last possible expiry has passed
	// (plus the leader's sweep), the log must have deleted every one.
	var stored int
	for {
		info, err := c.DescribeTable(ctx, w.table)
		if err == nil {
			stored = info.Rows
			if stored == 0 {
				break
			}
		}
		if time.Now().After(latest.Add(5 * time.Second)) {
			return Verdict{Checker: "ttl", Detail: fmt.Sprintf("%d expired rows still stored %v after the last expiry (err %v)",
				stored, time.Since(latest).Round(time.Millisecond), err)}
		}
		select {
		case <-ctx.Done():
			return Verdict{Checker: "ttl", Detail: "check deadline passed waiting for expiry"}
		case <-time.After(200 * time.Millisecond):
		}
	}
	return Verdict{Checker: "ttl", OK: true, Detail: fmt.Sprintf("%d expiring rows, %d reads and refreshes around their expiry all consistent; all deleted by the log",
		n, reads)}
}
