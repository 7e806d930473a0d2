package loadtest

import (
	"fmt"
	"html/template"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/segmentio/encoding/json"
)

// Machine describes where the run happened.
type Machine struct {
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
	OS     string `json:"os"`
	Go     string `json:"go"`
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	return Percentiles{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max())}
}

// Second is one second of the run, by intended send time.
type Second struct {
	At        int                    `json:"at_s"`
	Acked     int64                  `json:"acked"`
	Errors    int64                  `json:"errors"`
	Ack       Percentiles            `json:"ack"`
	Freshness map[string]Percentiles `json:"freshness"`
}

// Check is one correctness check of the stores.
type Check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Found string `json:"found"`
}

// Result is everything a run measured; it is written as result.json.
type Result struct {
	RunID     string      `json:"run_id"`
	StartedAt time.Time   `json:"started_at"`
	Machine   Machine     `json:"machine"`
	Config    Config      `json:"config"`
	Duration  float64     `json:"load_seconds"`
	Sent      int64       `json:"commands_sent"`
	Acked     int64       `json:"commands_acknowledged"`
	Refused   int64       `json:"invalid_commands_refused"`
	Errors    int64       `json:"errors"`
	Unexpect  int64       `json:"unexpected_answers"`
	LastError string      `json:"last_error,omitempty"`
	Rate      float64     `json:"acknowledged_per_second"`
	Ack       Percentiles `json:"ack_latency"`
	// IngestAck is the same latency as the ingest measured it, from its
	// request histogram: each value is a bucket's upper bound.
	IngestAck *Percentiles           `json:"ingest_side_ack_latency,omitempty"`
	Freshness map[string]Percentiles `json:"freshness"`
	CaughtUp  bool                   `json:"projections_caught_up"`
	// PeakRSSMiB is the highest resident memory seen per process, read
	// from process_resident_memory_bytes on the metrics endpoints.
	PeakRSSMiB map[string]float64 `json:"peak_rss_mib"`
	// CPUSeconds is the CPU time each process used during the load, from
	// process_cpu_seconds_total read before and after it.
	CPUSeconds map[string]float64 `json:"cpu_seconds"`
	Seconds    []Second           `json:"seconds"`
	Checks     []Check            `json:"checks"`
	Passed     bool               `json:"passed"`
}

func (r *recorder) result(cfg Config, runID string, load time.Duration, caughtUp bool) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{
		RunID: runID, StartedAt: r.start.UTC(), Machine: machine(), Config: cfg, Duration: load.Seconds(),
		Sent: r.sent, Acked: r.acked, Refused: r.refused, Errors: r.errors, Unexpect: r.unexpect, LastError: r.lastError,
		Rate: float64(r.acked) / load.Seconds(), Ack: percentiles(r.ack), Freshness: map[string]Percentiles{}, CaughtUp: caughtUp,
		PeakRSSMiB: map[string]float64{},
	}
	for url, mib := range r.peakRSS {
		name := r.roleOf[url]
		if name == "" {
			name = url
		}
		if mib > 0 {
			res.PeakRSSMiB[name] = mib
		}
	}
	for _, p := range projections {
		res.Freshness[p] = percentiles(r.fresh[p])
	}
	for i, s := range r.seconds {
		sec := Second{At: i, Acked: s.acked, Errors: s.errors, Ack: percentiles(s.ack), Freshness: map[string]Percentiles{}}
		for _, p := range projections {
			sec.Freshness[p] = percentiles(s.fresh[p])
		}
		res.Seconds = append(res.Seconds, sec)
	}
	return res
}

// Summary renders the result for a terminal.
func (res *Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s on %d × %s, %s\n", res.RunID, res.Machine.CPUs, res.Machine.CPU, res.Machine.Memory)
	fmt.Fprintf(&b, "load      %.0fs, %d commands sent, %d acknowledged (%.0f/s), %d invalid refused, %d errors, %d unexpected answers\n",
		res.Duration, res.Sent, res.Acked, res.Rate, res.Refused, res.Errors, res.Unexpect)
	if res.LastError != "" {
		fmt.Fprintf(&b, "          last error: %s\n", res.LastError)
	}
	row := func(name string, p Percentiles) {
		fmt.Fprintf(&b, "%-22s n=%-8d p50 %8.2fms  p90 %8.2fms  p99 %8.2fms  p99.9 %8.2fms  max %8.2fms\n", name, p.Count, p.P50, p.P90, p.P99, p.P999, p.Max)
	}
	if res.Config.PreferWait > 0 {
		row("decision (Prefer:wait)", res.Ack)
	} else {
		row("acknowledgement", res.Ack)
	}
	if p := res.IngestAck; p != nil {
		fmt.Fprintf(&b, "%-22s n=%-8d p50 <=%6.1fms  p90 <=%6.1fms  p99 <=%6.1fms  p99.9 <=%6.1fms  (the ingest's histogram)\n",
			"  inside ingest", p.Count, p.P50, p.P90, p.P99, p.P999)
	}
	for _, p := range projections {
		row("freshness "+p, res.Freshness[p])
	}
	for _, process := range slices.Sorted(maps.Keys(res.PeakRSSMiB)) {
		fmt.Fprintf(&b, "peak RSS %-29s %.0f MiB\n", process, res.PeakRSSMiB[process])
	}
	for _, process := range slices.Sorted(maps.Keys(res.CPUSeconds)) {
		cpu := res.CPUSeconds[process]
		fmt.Fprintf(&b, "CPU %-34s %.1f s (%.1f%% of a core; %.1f ms per 1,000 acknowledged commands)\n",
			process, cpu, 100*cpu/res.Duration, 1e6*cpu/float64(max(1, res.Acked)))
	}
	fmt.Fprintf(&b, "projections caught up: %v\n", res.CaughtUp)
	for _, c := range res.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "check %s %s: %s\n", mark, c.Name, c.Found)
	}
	verdict := "PASSED"
	if !res.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "result: %s\n", verdict)
	return b.String()
}

func writeResults(dir string, res *Result) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), data, 0o600); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.html")) //nolint:gosec // G304: the directory the operator named with --out
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	return reportTemplate.Execute(f, reportData(res))
}

// chart is an SVG polyline chart, drawn here so the report needs nothing
// but a browser, offline.
type chart struct {
	Title  string
	Unit   string
	Max    float64
	Series []series
}

type series struct {
	Name   string
	Color  string
	Points string
}

func makeChart(title, unit string, n int, lines map[string]func(Second) float64, colors map[string]string, secs []Second) chart {
	c := chart{Title: title, Unit: unit}
	for _, f := range lines {
		for _, s := range secs {
			c.Max = max(c.Max, f(s))
		}
	}
	if c.Max == 0 {
		c.Max = 1
	}
	for _, name := range sortedNames(lines) {
		var pts []string
		for i, s := range secs {
			x := 40 + float64(i)*720/float64(max(1, n-1))
			y := 200 - lines[name](s)/c.Max*180
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		c.Series = append(c.Series, series{Name: name, Color: colors[name], Points: strings.Join(pts, " ")})
	}
	return c
}

func sortedNames(m map[string]func(Second) float64) []string {
	return slices.Sorted(maps.Keys(m))
}

func reportData(res *Result) map[string]any {
	secs := res.Seconds
	n := len(secs)
	colors := map[string]string{"acknowledged/s": "#1f77b4", "errors/s": "#d62728", "p50": "#2ca02c", "p99": "#ff7f0e",
		"postgres p99": "#9467bd", "clickhouse p99": "#8c564b"}
	charts := []chart{
		makeChart("Throughput", "commands/s", n, map[string]func(Second) float64{
			"acknowledged/s": func(s Second) float64 { return float64(s.Acked) },
			"errors/s":       func(s Second) float64 { return float64(s.Errors) },
		}, colors, secs),
		makeChart("Acknowledgement latency", "ms", n, map[string]func(Second) float64{
			"p50": func(s Second) float64 { return s.Ack.P50 },
			"p99": func(s Second) float64 { return s.Ack.P99 },
		}, colors, secs),
		makeChart("Freshness (ack to queryable)", "ms", n, map[string]func(Second) float64{
			"postgres p99":   func(s Second) float64 { return s.Freshness["postgres"].P99 },
			"clickhouse p99": func(s Second) float64 { return s.Freshness["clickhouse"].P99 },
		}, colors, secs),
	}
	return map[string]any{"R": res, "Summary": res.Summary(), "Charts": charts}
}

var reportTemplate = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Kappa load test {{.R.RunID}}</title>
<style>body{font-family:sans-serif;max-width:860px;margin:2em auto;color:#222}pre{background:#f6f6f6;padding:1em;overflow-x:auto}
svg{border:1px solid #ddd;background:#fff}.legend span{margin-right:1.5em}</style></head><body>
<h1>Kappa load test {{.R.RunID}}</h1>
<p>{{.R.StartedAt}} · {{.R.Machine.CPUs}} × {{.R.Machine.CPU}} · {{.R.Machine.Memory}} · {{.R.Machine.Go}}</p>
<pre>{{.Summary}}</pre>
{{range .Charts}}<h2>{{.Title}}</h2>
<svg width="780" height="220" viewBox="0 0 780 220">
<line x1="40" y1="200" x2="760" y2="200" stroke="#999"/><line x1="40" y1="20" x2="40" y2="200" stroke="#999"/>
<text x="44" y="16" font-size="11">{{printf "%.1f" .Max}} {{.Unit}}</text><text x="44" y="214" font-size="11">0</text>
{{range .Series}}<polyline fill="none" stroke="{{.Color}}" stroke-width="1.5" points="{{.Points}}"/>{{end}}
</svg>
<div class="legend">{{range .Series}}<span style="color:{{.Color}}">■ {{.Name}}</span>{{end}}</div>
{{end}}
<p>x axis: seconds of the run, by intended send time. Raw numbers: result.json beside this file.</p>
</body></html>
`))
