package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/memdbd/memdbd/client"
)

// watchChecker runs SDK watches over the set workload's table through
// every fault and checks what they delivered against what the cluster
// committed: in revision order, no key twice, each insert at the revision
// it was committed at, and, at the end, a view equal to the table (so no
// change was skipped).
type watchChecker struct {
	watches []*watchRecord
}

type watchRecord struct {
	mu     sync.Mutex
	view   map[string]uint64 // key -> revision of its put, as delivered
	order  []string          // violations of order or uniqueness
	rev    uint64
	resets int
	events int
	err    error
}

func startWatchChecker(ctx context.Context, n int, newClient func() (*client.Client, error), table string) (*watchChecker, func(), error) {
	wc := &watchChecker{}
	var clients []*client.Client
	closeAll := func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}
	for range n {
		c, err := newClient()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		clients = append(clients, c)
		r := &watchRecord{view: map[string]uint64{}}
		wc.watches = append(wc.watches, r)
		ch := c.Watch(ctx, table, client.WatchOptions{Snapshot: true, ProgressInterval: 200 * time.Millisecond})
		go r.consume(ctx, ch)
	}
	return wc, closeAll, nil
}

func (r *watchRecord) consume(ctx context.Context, ch <-chan client.WatchResponse) {
	for resp := range ch {
		r.mu.Lock()
		switch {
		case resp.Err != nil:
			if ctx.Err() == nil {
				r.err = resp.Err
			}
		case resp.Reset:
			r.resets++
			r.view = map[string]uint64{}
			for _, row := range resp.Rows {
				r.view[row.Fields["k"].AsString()] = row.ModRevision
			}
		default:
			for _, e := range resp.Events {
				r.events++
				k := e.Row.Fields["k"].AsString()
				if e.Revision < r.rev {
					r.order = append(r.order, fmt.Sprintf("%s at revision %d after revision %d", k, e.Revision, r.rev))
				}
				r.rev = max(r.rev, e.Revision)
				if e.Type != client.EventPut {
					r.order = append(r.order, fmt.Sprintf("delete of %s at %d in an insert-only table", k, e.Revision))
					continue
				}
				if prev, dup := r.view[k]; dup {
					r.order = append(r.order, fmt.Sprintf("%s delivered twice (revisions %d and %d)", k, prev, e.Revision))
				}
				r.view[k] = e.Revision
			}
		}
		if resp.Err == nil {
			r.rev = max(r.rev, resp.Revision)
		}
		r.mu.Unlock()
	}
}

// check waits for every watch to reach the table's current revision, then
// compares what each built with the table.
func (wc *watchChecker) check(ctx context.Context, c *client.Client, table string, acked map[string]uint64) Verdict {
	page, err := c.Scan(ctx, table, client.ScanOptions{Limit: 1})
	if err != nil {
		return Verdict{Checker: "watch", Detail: "reading the revision: " + err.Error()}
	}
	target := page.Header.Revision
	rows := map[string]uint64{}
	for row, err := range c.ScanAll(ctx, table, client.ScanOptions{Limit: 5000}) {
		if err != nil {
			return Verdict{Checker: "watch", Detail: "final scan: " + err.Error()}
		}
		rows[row.Fields["k"].AsString()] = row.CreateRevision
	}
	events, resets := 0, 0
	for i, r := range wc.watches {
		for {
			r.mu.Lock()
			reached, werr := r.rev, r.err
			r.mu.Unlock()
			if reached >= target || werr != nil {
				break
			}
			select {
			case <-ctx.Done():
				return Verdict{Checker: "watch", Detail: fmt.Sprintf("watch %d reached revision %d, not %d, before the check deadline", i, reached, target)}
			case <-time.After(50 * time.Millisecond):
			}
		}
		r.mu.Lock()
		problem := r.judge(i, rows, acked)
		events += r.events
		resets += r.resets
		r.mu.Unlock()
		if problem != "" {
			return Verdict{Checker: "watch", Detail: problem}
		}
	}
	return Verdict{Checker: "watch", OK: true, Detail: fmt.Sprintf("%d watches: %d events in order, each insert once at its committed revision, views equal to the table's %d rows at revision %d (%d re-lists)",
		len(wc.watches), events, len(rows), target, resets)}
}

// judge compares what watch i delivered with the table's rows (key ->
// create revision) and the acknowledged inserts, returning the failure or
// "". r.mu must be held. (Split from check so that the checker can be
// tested on planted streams without a cluster.)
func (r *watchRecord) judge(i int, rows, acked map[string]uint64) string {
	if r.err != nil {
		return fmt.Sprintf("watch %d ended: %v", i, r.err)
	}
	if len(r.order) > 0 {
		return fmt.Sprintf("watch %d: %d order or uniqueness violations: %v", i, len(r.order), r.order[:min(5, len(r.order))])
	}
	var missing, extra, wrongRev []string
	for k, rev := range rows {
		got, ok := r.view[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case got != rev:
			wrongRev = append(wrongRev, fmt.Sprintf("%s at %d, committed at %d", k, got, rev))
		}
	}
	for k := range r.view {
		if _, ok := rows[k]; !ok {
			extra = append(extra, k)
		}
	}
	for k, rev := range acked {
		if got, ok := r.view[k]; ok && got != rev {
			wrongRev = append(wrongRev, fmt.Sprintf("%s at %d, acknowledged at %d", k, got, rev))
		}
	}
	if len(missing)+len(extra)+len(wrongRev) > 0 {
		return fmt.Sprintf("watch %d: %d rows never delivered %v, %d delivered but not committed %v, %d at the wrong revision %v",
			i, len(missing), missing[:min(5, len(missing))], len(extra), extra[:min(5, len(extra))], len(wrongRev), wrongRev[:min(5, len(wrongRev))])
	}
	return ""
}
