package loadtest

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Bucket is one slice of the timeline.
type Bucket struct {
	// T is the bucket's start since the measured phase began.
	T      time.Duration `json:"t_ns"`
	OK     int64         `json:"ok"`
	Errors int64         `json:"errors"`
	// P99 latency of the bucket's successful operations.
	P99 time.Duration `json:"p99_ns"`
	// FirstOK and LastOK are when the bucket's first and last successful
	// operations completed, since the measured phase began (zero when OK
	// is zero). They time an outage to the millisecond rather than to the
	// bucket.
	FirstOK time.Duration `json:"first_ok_ns,omitempty"`
	LastOK  time.Duration `json:"last_ok_ns,omitempty"`
	hist    *hdrhistogram.Histogram
}

// note records a successful operation that completed at t.
func (b *Bucket) note(t time.Duration) {
	if b.OK == 0 || t < b.FirstOK {
		b.FirstOK = t
	}
	if b.OK == 0 || t > b.LastOK {
		b.LastOK = t
	}
	b.OK++
}

// merge adds o's counts and times to b.
func (b *Bucket) merge(o *Bucket) {
	if o.OK > 0 {
		if b.OK == 0 || o.FirstOK < b.FirstOK {
			b.FirstOK = o.FirstOK
		}
		if b.OK == 0 || o.LastOK > b.LastOK {
			b.LastOK = o.LastOK
		}
	}
	b.OK += o.OK
	b.Errors += o.Errors
	b.hist.Merge(o.hist)
}

// Latency holds latency percentiles.
type Latency struct {
	P50, P90, P99, P999, Max time.Duration
}

// Result is the outcome of a run.
type Result struct {
	Target     string        `json:"target"`
	Workload   string        `json:"workload"`
	Clients    int           `json:"clients"`
	Rate       float64       `json:"rate,omitempty"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	OK         int64         `json:"ok"`
	Errors     int64         `json:"errors"`
	Throughput float64       `json:"throughput"`
	// Unsent counts the operations an open loop scheduled within the run
	// but could not send because every client was busy (Run).
	Unsent     int64            `json:"unsent,omitempty"`
	Latency    Latency          `json:"latency_ns"`
	ErrorCodes map[string]int64 `json:"errors_by_code"`
	Timeline   []Bucket         `json:"timeline"`
	Bucket     time.Duration    `json:"bucket_ns"`
	// Events are scenario events (a failover) at times since the start.
	Events []Event `json:"events,omitempty"`
	// Outages measures the unavailability after each event.
	Outages []Outage `json:"outages,omitempty"`
}

// Outage is what an event cost the clients (Result.Unavailability).
type Outage struct {
	Event string `json:"event"`
	// Gap is the longest time without a successful operation around the
	// event: from the last success before it to the first success after.
	Gap time.Duration `json:"gap_ns"`
	// Recovery is the time from the event until throughput is back to 90%
	// of its level before the event.
	Recovery time.Duration `json:"recovery_ns"`
}

// Event marks a scenario event on the timeline.
type Event struct {
	T    time.Duration `json:"t_ns"`
	What string        `json:"what"`
}

func summarize(target, workload string, cfg Config, recs []*recorder, elapsed time.Duration) *Result {
	h := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	res := &Result{Target: target, Workload: workload, Clients: cfg.Clients, Rate: cfg.Rate, Elapsed: elapsed,
		ErrorCodes: map[string]int64{}, Bucket: cfg.Bucket}
	buckets := map[int]*Bucket{}
	for _, r := range recs {
		h.Merge(r.hist)
		for code, n := range r.errs {
			res.ErrorCodes[code] += n
			res.Errors += n
		}
		for i, b := range r.timeline {
			agg := buckets[i]
			if agg == nil {
				agg = &Bucket{T: time.Duration(i) * cfg.Bucket, hist: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 2)}
				buckets[i] = agg
			}
			agg.merge(b)
		}
	}
	res.OK = h.TotalCount()
	if elapsed > 0 {
		res.Throughput = float64(res.OK) / elapsed.Seconds()
	}
	us := func(q float64) time.Duration { return time.Duration(h.ValueAtQuantile(q)) * time.Microsecond }
	res.Latency = Latency{P50: us(50), P90: us(90), P99: us(99), P999: us(99.9), Max: time.Duration(h.Max()) * time.Microsecond}
	last := int(elapsed / cfg.Bucket)
	for i := 0; i <= last; i++ {
		b := buckets[i]
		if b == nil {
			b = &Bucket{T: time.Duration(i) * cfg.Bucket}
		} else if b.hist.TotalCount() > 0 {
			b.P99 = time.Duration(b.hist.ValueAtQuantile(99)) * time.Microsecond
		}
		res.Timeline = append(res.Timeline, *b)
	}
	return res
}

// String is the human summary.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s, %d clients", r.Target, r.Workload, r.Clients)
	if r.Rate > 0 {
		fmt.Fprintf(&b, ", open loop at %.0f/s", r.Rate)
	}
	fmt.Fprintf(&b, ", %v\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "  throughput %.0f ops/s (%d ok, %d errors)\n", r.Throughput, r.OK, r.Errors)
	if r.Unsent > 0 {
		fmt.Fprintf(&b, "  open loop fell behind: %d scheduled operations were never sent (every client was busy; use more clients)\n", r.Unsent)
	}
	l := r.Latency
	fmt.Fprintf(&b, "  latency p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	if len(r.ErrorCodes) > 0 {
		codes := make([]string, 0, len(r.ErrorCodes))
		for c := range r.ErrorCodes {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		fmt.Fprint(&b, "  errors:")
		for _, c := range codes {
			fmt.Fprintf(&b, " %s=%d", c, r.ErrorCodes[c])
		}
		fmt.Fprintln(&b)
	}
	for _, e := range r.Events {
		fmt.Fprintf(&b, "  %7.2fs %s\n", e.T.Seconds(), e.What)
	}
	for _, o := range r.Outages {
		fmt.Fprintf(&b, "  unavailability after %q: %v without a successful request; %v until 90%% throughput\n",
			o.Event, o.Gap.Round(time.Millisecond), o.Recovery)
	}
	return b.String()
}

// WriteJSON writes the result as JSON to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// chart is a self-contained HTML page: throughput and p99 latency over
// time as inline SVG, with scenario events marked, so that a failover
// shows as a visible gap. Hand-written because it is a few dozen lines
// and needs no plotting dependency or browser scripts.
var chart = template.Must(template.New("chart").Funcs(template.FuncMap{
	"pct": func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b * 100
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.R.Target}} {{.R.Workload}}</title>
<style>body{font-family:sans-serif;margin:2em}svg{background:#fafafa;border:1px solid #ddd}
.ok{fill:none;stroke:#2a6;stroke-width:1.5}.lat{fill:none;stroke:#c33;stroke-width:1.5}.err{fill:#c33}.ev{stroke:#33c;stroke-dasharray:4}</style></head>
<body><h2>{{.R.Target}} — {{.R.Workload}}, {{.R.Clients}} clients</h2>
<pre>{{.Summary}}</pre>
<h3>Throughput (ops/s, green) and errors (red bars) per {{.R.Bucket}}</h3>
<svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}">
<polyline class="ok" points="{{.OKPoints}}"/>{{range .ErrBars}}<rect class="err" x="{{.X}}" y="{{.Y}}" width="{{.Wd}}" height="{{.Ht}}"/>{{end}}
{{range .EventX}}<line class="ev" x1="{{.}}" x2="{{.}}" y1="0" y2="{{$.H}}"/>{{end}}
<text x="4" y="14">max {{printf "%.0f" .MaxOK}} ops/s</text></svg>
<h3>p99 latency per {{.R.Bucket}} (ms)</h3>
<svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}">
<polyline class="lat" points="{{.LatPoints}}"/>
{{range .EventX}}<line class="ev" x1="{{.}}" x2="{{.}}" y1="0" y2="{{$.H}}"/>{{end}}
<text x="4" y="14">max {{printf "%.1f" .MaxLat}} ms</text></svg>
<p>Dashed lines: {{range .R.Events}}{{.What}} at {{.T}}; {{end}}</p>
</body></html>`))

type bar struct{ X, Y, Wd, Ht float64 }

// svgChart is the same timeline as a standalone SVG image (for docs).
var svgChart = template.Must(template.New("svg").Parse(`<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H2}}" viewBox="0 0 {{.W}} {{.H2}}" font-family="sans-serif" font-size="12">
<rect width="{{.W}}" height="{{.H2}}" fill="#fff"/>
<text x="8" y="16">{{.Title}}</text>
<g transform="translate(0,24)"><rect width="{{.W}}" height="{{.H}}" fill="#fafafa" stroke="#ddd"/>
<polyline fill="none" stroke="#2a6" stroke-width="1.5" points="{{.OKPoints}}"/>{{range .ErrBars}}<rect fill="#c33" x="{{.X}}" y="{{.Y}}" width="{{.Wd}}" height="{{.Ht}}"/>{{end}}
{{range .EventX}}<line stroke="#33c" stroke-dasharray="4" x1="{{.}}" x2="{{.}}" y1="0" y2="{{$.H}}"/>{{end}}
<text x="6" y="14">throughput, max {{printf "%.0f" .MaxOK}} ops/s per second (green); errors (red)</text></g>
<g transform="translate(0,{{.Off}})"><rect width="{{.W}}" height="{{.H}}" fill="#fafafa" stroke="#ddd"/>
<polyline fill="none" stroke="#c33" stroke-width="1.5" points="{{.LatPoints}}"/>
{{range .EventX}}<line stroke="#33c" stroke-dasharray="4" x1="{{.}}" x2="{{.}}" y1="0" y2="{{$.H}}"/>{{end}}
<text x="6" y="14">p99 latency, max {{printf "%.1f" .MaxLat}} ms; dashed: {{range .Events}}{{.What}} {{end}}</text></g>
</svg>
`))

// chartData lays out the timeline for the chart templates.
func (r *Result) chartData() map[string]any {
	const W, H = 900.0, 240.0
	n := len(r.Timeline)
	if n == 0 {
		n = 1
	}
	per := r.Bucket.Seconds()
	var maxOK, maxLat float64
	for _, b := range r.Timeline {
		maxOK = max(maxOK, float64(b.OK+b.Errors)/per)
		maxLat = max(maxLat, float64(b.P99)/1e6)
	}
	maxOK, maxLat = max(maxOK, 1), max(maxLat, 0.001)
	var okPts, latPts strings.Builder
	var bars []bar
	for i, b := range r.Timeline {
		x := float64(i) / float64(n) * W
		fmt.Fprintf(&okPts, "%.1f,%.1f ", x, H-float64(b.OK)/per/maxOK*(H-20))
		fmt.Fprintf(&latPts, "%.1f,%.1f ", x, H-float64(b.P99)/1e6/maxLat*(H-20))
		if b.Errors > 0 {
			ht := float64(b.Errors) / per / maxOK * (H - 20)
			bars = append(bars, bar{X: x, Y: H - ht, Wd: max(W/float64(n), 1), Ht: ht})
		}
	}
	var evx []float64
	for _, e := range r.Events {
		evx = append(evx, float64(e.T)/float64(time.Duration(n)*r.Bucket)*W)
	}
	return map[string]any{"R": r, "Summary": r.String(), "W": W, "H": H, "H2": 2*H + 40, "Off": H + 34,
		"Title": fmt.Sprintf("%s %s, %d clients, %v buckets", r.Target, r.Workload, r.Clients, r.Bucket), "Events": r.Events,
		"OKPoints": okPts.String(), "LatPoints": latPts.String(), "ErrBars": bars, "EventX": evx, "MaxOK": maxOK, "MaxLat": maxLat}
}

// WriteHTML writes the timeline chart as a self-contained page.
func (r *Result) WriteHTML(w io.Writer) error { return chart.Execute(w, r.chartData()) }

// WriteSVG writes the timeline chart as an SVG image.
func (r *Result) WriteSVG(w io.Writer) error { return svgChart.Execute(w, r.chartData()) }

// Unavailability measures a disturbance at time at (since the measured
// phase began), looking up to five seconds past it.
//
// gap is the longest time without a successful operation that ends after
// the event: from the last success before the outage to the first success
// after it. It is exact to the completion times when the outage spans a
// bucket boundary; a pause that begins and ends inside one bucket is not
// seen. An outage still going when the run ended counts up to the end.
//
// recovery is the time from the event until throughput, over a sliding
// window of about half a second, is back to 90% of its average before the
// event.
func (r *Result) Unavailability(at time.Duration) (gap, recovery time.Duration) {
	ev := int(at / r.Bucket)
	if r.Bucket <= 0 || ev < 1 || ev >= len(r.Timeline) {
		return 0, 0
	}
	horizon := min(len(r.Timeline), ev+1+int(5*time.Second/r.Bucket))
	var lastOK time.Duration // the phase's start if nothing succeeded before
	for i := ev - 1; i >= 0; i-- {
		if r.Timeline[i].OK > 0 {
			lastOK = r.Timeline[i].LastOK
			break
		}
	}
	resume := ev // the bucket in which service came back
	for i := ev; i < horizon; i++ {
		b := &r.Timeline[i]
		if b.OK == 0 {
			continue
		}
		if d := b.FirstOK - lastOK; d > gap && b.FirstOK >= at {
			gap, resume = d, i
		}
		lastOK = b.LastOK
	}
	if horizon == len(r.Timeline) && r.Elapsed-lastOK > gap && r.Elapsed > at {
		gap, resume = r.Elapsed-lastOK, len(r.Timeline)
	}

	var before float64
	for _, b := range r.Timeline[:ev] {
		before += float64(b.OK)
	}
	before /= float64(ev)
	// Single small buckets are too noisy to compare with an average.
	win := max(1, int(500*time.Millisecond/r.Bucket))
	for i := max(resume, ev+1); i+win <= len(r.Timeline); i++ {
		var sum float64
		for _, b := range r.Timeline[i : i+win] {
			sum += float64(b.OK)
		}
		if sum/float64(win) >= 0.9*before {
			return gap, time.Duration(i-ev) * r.Bucket
		}
	}
	return gap, time.Duration(len(r.Timeline)-ev) * r.Bucket
}
