package loadtest

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// timeline builds a 100 ms-bucket result from per-bucket success counts;
// a bucket's successes are spread evenly over it.
func timeline(counts ...int64) *Result {
	const bucket = 100 * time.Millisecond
	r := &Result{Bucket: bucket, Elapsed: time.Duration(len(counts)) * bucket}
	for i, n := range counts {
		b := Bucket{T: time.Duration(i) * bucket, OK: n}
		if n > 0 {
			b.FirstOK = b.T + bucket/(2*time.Duration(n))
			b.LastOK = b.T + bucket - bucket/(2*time.Duration(n))
		}
		r.Timeline = append(r.Timeline, b)
	}
	return r
}

func TestUnavailabilityIsTimedFromTheLastSuccessToTheFirst(t *testing.T) {
	// 10 per bucket, then a kill in bucket 5, nothing for three buckets,
	// slow recovery, full speed from bucket 12.
	r := timeline(10, 10, 10, 10, 10, 2, 0, 0, 0, 1, 4, 8, 10, 10, 10, 10, 10, 10, 10)
	gap, recovery := r.Unavailability(510 * time.Millisecond)
	// Bucket 5's last success at 575 ms, bucket 9's only one at 950 ms.
	if want := 950*time.Millisecond - 575*time.Millisecond; gap != want {
		t.Fatalf("gap %v, want %v", gap, want)
	}
	// 90% of 10 per bucket, averaged over a 5-bucket window, first holds
	// for the window starting at bucket 11 (48 in 5 buckets): 600 ms after
	// the event's bucket.
	if want := 600 * time.Millisecond; recovery != want {
		t.Fatalf("recovery %v, want %v", recovery, want)
	}
}

func TestUnavailabilityWithoutAnOutageIsShort(t *testing.T) {
	r := timeline(10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10)
	gap, recovery := r.Unavailability(300 * time.Millisecond)
	if gap > 20*time.Millisecond {
		t.Fatalf("gap %v in a steady run", gap)
	}
	if recovery != 100*time.Millisecond {
		t.Fatalf("recovery %v in a steady run, want the first window", recovery)
	}
}

func TestUnavailabilityOfAnOutageThatOutlastsTheRun(t *testing.T) {
	r := timeline(10, 10, 10, 10, 3, 0, 0, 0)
	gap, recovery := r.Unavailability(420 * time.Millisecond)
	// From bucket 4's last success (100/6 ms before its end) to the end.
	if want := r.Elapsed - r.Timeline[4].LastOK; gap != want {
		t.Fatalf("gap %v, want %v", gap, want)
	}
	if recovery != 400*time.Millisecond {
		t.Fatalf("recovery %v, want the rest of the run", recovery)
	}
	if gap, recovery := r.Unavailability(0); gap != 0 || recovery != 0 {
		t.Fatalf("an event before any baseline measured %v / %v", gap, recovery)
	}
}

func TestBucketMergeKeepsTheOuterSuccessTimes(t *testing.T) {
	a, b := &Bucket{}, &Bucket{}
	a.note(30 * time.Millisecond)
	a.note(10 * time.Millisecond)
	b.note(50 * time.Millisecond)
	b.note(20 * time.Millisecond)
	agg := &Bucket{hist: newRecorder().hist}
	a.hist, b.hist = newRecorder().hist, newRecorder().hist
	agg.merge(a)
	agg.merge(b)
	agg.merge(&Bucket{Errors: 3, hist: newRecorder().hist})
	if agg.OK != 4 || agg.Errors != 3 || agg.FirstOK != 10*time.Millisecond || agg.LastOK != 50*time.Millisecond {
		t.Fatalf("merged %+v", *agg)
	}
}

// The JSON names carry their units; a reader must not have to guess.
func TestResultJSONNamesItsUnits(t *testing.T) {
	r := timeline(1, 2)
	r.Outages = []Outage{{Event: "kill -9 of leader n1", Gap: 1500 * time.Millisecond, Recovery: 2 * time.Second}}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Timeline []map[string]int64 `json:"timeline"`
		Outages  []map[string]any   `json:"outages"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Timeline) != 2 || got.Timeline[1]["t_ns"] != int64(100*time.Millisecond) || got.Timeline[1]["first_ok_ns"] != int64(125*time.Millisecond) {
		t.Fatalf("timeline %v", got.Timeline)
	}
	if len(got.Outages) != 1 || got.Outages[0]["gap_ns"] != float64(1500*time.Millisecond) {
		t.Fatalf("outages %v", got.Outages)
	}
}

func TestChartsShowTheEventsAndOutages(t *testing.T) {
	r := timeline(10, 10, 0, 0, 10)
	r.Target, r.Workload = "memdbd", "write"
	r.Events = []Event{{T: 200 * time.Millisecond, What: "kill -9 of leader n2"}}
	gap, rec := r.Unavailability(200 * time.Millisecond)
	r.Outages = []Outage{{Event: r.Events[0].What, Gap: gap, Recovery: rec}}
	var html, svg bytes.Buffer
	if err := r.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"html": html.String(), "svg": svg.String()} {
		if !strings.Contains(out, "kill -9 of leader n2") || !strings.Contains(out, "<polyline") {
			t.Errorf("%s chart lacks the event or the series:\n%s", name, out)
		}
	}
	if !strings.Contains(r.String(), "unavailability after \"kill -9 of leader n2\": 210ms") {
		t.Fatalf("summary:\n%s", r.String())
	}
}

func TestWorkloadsDrawTheirMix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	w, err := NewWorkload("mixed", 1000, false, 0.9)
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for range 10000 {
		op := w.Next(rng)
		if op.Kind == OpRead {
			reads++
		} else if op.Kind != OpWrite {
			t.Fatalf("mixed workload drew %v", op.Kind)
		}
		if len(op.Key) != 8 {
			t.Fatalf("key %q is not 8 bytes", op.Key)
		}
	}
	if reads < 8800 || reads > 9200 {
		t.Fatalf("%d reads in 10000 at a 0.9 read ratio", reads)
	}

	ins, _ := NewWorkload("insert", 10, false, 0)
	seen := map[string]bool{}
	for range 1000 {
		k := ins.Next(rng).Key
		if seen[k] {
			t.Fatalf("insert workload repeated key %q", k)
		}
		seen[k] = true
	}

	for _, bad := range []struct {
		name  string
		keys  int
		ratio float64
	}{{"mixed", 10, 1.5}, {"mixed", 10, -0.1}, {"nosuch", 10, 0}, {"write", 0, 0}} {
		if _, err := NewWorkload(bad.name, bad.keys, false, bad.ratio); err == nil {
			t.Errorf("NewWorkload(%q, %d, %v) accepted", bad.name, bad.keys, bad.ratio)
		}
	}
}

func TestZipfianKeysAreSkewedAndInRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	w, err := NewWorkload("read", 1000, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int64]int{}
	for range 20000 {
		op := w.Next(rng)
		if op.Num < 0 || op.Num >= 1000 || op.Key != KeyName(int(op.Num)) {
			t.Fatalf("op %+v out of the key space", op)
		}
		counts[op.Num]++
	}
	// With s = 1.1 the first key draws far more than a uniform 20 per key.
	if counts[0] < 2000 || counts[0] <= counts[10] {
		t.Fatalf("key 0 drawn %d times, key 10 %d: not zipfian", counts[0], counts[10])
	}
}
