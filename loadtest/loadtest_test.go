package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

func TestParseSteps(t *testing.T) {
	steps, err := ParseSteps("1000:30s, 2500.5:1m")
	if err != nil || len(steps) != 2 || steps[0] != (Step{1000, 30 * time.Second}) || steps[1] != (Step{2500.5, time.Minute}) {
		t.Fatalf("ParseSteps = %v, %v", steps, err)
	}
	for _, bad := range []string{"1000", "0:30s", "-1:30s", "100:0s", "x:1s", "100:fast"} {
		if _, err := ParseSteps(bad); err == nil {
			t.Errorf("ParseSteps(%q) accepted", bad)
		}
	}
}

func TestParseMix(t *testing.T) {
	m, err := ParseMix("add=7,invalid=3")
	if err != nil || m != (Mix{AddProduct: 7, Invalid: 3}) {
		t.Fatalf("ParseMix = %+v, %v", m, err)
	}
	for _, bad := range []string{"add", "add=-1", "explode=3", "add=x", "add=0,invalid=0"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{Steps: []Step{{Rate: 0, Duration: time.Second}}, Connections: -1, Zipf: 0.5, Mix: Mix{AddProduct: -1}}
	cfg.setDefaults()
	err := cfg.Validate()
	for _, want := range []string{"positive rate", "connections", "zipf", "mix"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

// The same seed yields the same commands, every aggregate is under the
// run's prefix, and the mix is honoured.
func TestGeneratorIsRepeatableAndFollowsTheMix(t *testing.T) {
	cfg := Config{Mix: Mix{AddProduct: 1, Invalid: 1}, Zipf: 1.3}
	cfg.setDefaults()
	a, b := newGenerator(cfg, "ltx-"), newGenerator(cfg, "ltx-")
	invalid := 0
	for i := range 2000 {
		x, invX := a.next()
		y, _ := b.next()
		if !bytes.Equal(x, y) {
			t.Fatalf("command %d differs for the same seed:\n%s\n%s", i, x, y)
		}
		if !bytes.Contains(x, []byte(`"aggregate_id":"ltx-cart-`)) {
			t.Fatalf("command %d is outside the run's prefix: %s", i, x)
		}
		if invX {
			invalid++
		}
	}
	if invalid < 900 || invalid > 1100 {
		t.Errorf("%d of 2000 invalid, want about half", invalid)
	}
}

// The default workload keeps writing events for the whole run: decided by
// the real aggregate, most valid commands are accepted, also long after
// every cart slot has seen a checkout.
func TestDefaultWorkloadKeepsProducingEvents(t *testing.T) {
	cfg := Config{Carts: 200, Articles: 50}
	cfg.setDefaults()
	gen := newGenerator(cfg, "ltx-")
	states := map[string]*aggregate.State{}
	const commands = 40000 // 100 checkouts per cart slot
	var valid, accepted, lateValid, lateAccepted, events int
	for i := range commands {
		body, invalid := gen.next()
		var req schemas.CommandRequest
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("command %d is not JSON: %v", i, err)
		}
		cmd, err := schemas.ValidateCommand(req)
		if invalid != (err != nil) {
			t.Fatalf("command %d: meant invalid %v, validation error %v: %s", i, invalid, err, body)
		}
		if invalid {
			continue
		}
		st, ok := states[req.AggregateID]
		if !ok {
			st = &aggregate.State{}
			states[req.AggregateID] = st
		}
		decided, rejection := aggregate.Decide(st, req.AggregateID, cmd)
		late := i >= commands/2
		valid++
		if late {
			lateValid++
		}
		if rejection != nil {
			continue
		}
		accepted++
		if late {
			lateAccepted++
		}
		for _, e := range decided {
			aggregate.Apply(st, e)
			events++
		}
	}
	if share := float64(accepted) / float64(valid); share < 0.7 {
		t.Errorf("%d of %d valid commands accepted (%.0f%%), want at least 70%%", accepted, valid, 100*share)
	}
	if share := float64(lateAccepted) / float64(lateValid); share < 0.7 {
		t.Errorf("second half: %d of %d valid commands accepted (%.0f%%), want at least 70%%", lateAccepted, lateValid, 100*share)
	}
	t.Logf("accepted %d of %d valid, %d of %d in the second half, %d events", accepted, valid, lateAccepted, lateValid, events)
	if events < accepted {
		t.Errorf("%d events for %d accepted commands", events, accepted)
	}
}

func TestReadMetricsParsesProgressAndMemory(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP kappa_projection_commands_through x
kappa_projection_commands_through{partition="0",projection="postgres"} 41
kappa_projection_commands_through{partition="3",projection="clickhouse"} 1.2e+06
kappa_projection_applied_records_total{projection="postgres"} 9
process_resident_memory_bytes 1.572864e+08
process_cpu_seconds_total 12.5
`)
	}))
	defer srv.Close()
	got := map[string]map[int32]int64{}
	m := readMetrics(t.Context(), srv.Client(), srv.URL, got)
	if got["postgres"][0] != 41 || got["clickhouse"][3] != 1_200_000 || len(got) != 2 {
		t.Fatalf("progress = %v", got)
	}
	if want := (processMemory{rssMiB: 150, cpuSeconds: 12.5, role: "projector clickhouse + projector postgres"}); m != want {
		t.Fatalf("memory = %+v, want %+v", m, want)
	}
}

func TestCPUUsedIsTheDifferenceByRole(t *testing.T) {
	before := map[string]processMemory{"a": {cpuSeconds: 10, role: "ingest"}, "b": {cpuSeconds: 3}, "c": {}}
	after := map[string]processMemory{"a": {cpuSeconds: 14.5, role: "ingest"}, "b": {cpuSeconds: 5}, "c": {}, "d": {cpuSeconds: 9}}
	got := cpuUsed(before, after)
	// "c" reports no CPU time and "d" was not read before the load.
	if want := map[string]float64{"ingest": 4.5, "b": 2}; !maps.Equal(got, want) {
		t.Fatalf("cpuUsed = %v, want %v", got, want)
	}
}

// Open loop: jobs are due at fixed times from the start, whatever the
// consumer of the queue does.
func TestScheduleIsOpenLoop(t *testing.T) {
	cfg := Config{Steps: []Step{{Rate: 200, Duration: 100 * time.Millisecond}, {Rate: 400, Duration: 50 * time.Millisecond}}, BatchSize: 1, Mix: Mix{AddProduct: 1}}
	cfg.setDefaults()
	start := time.Now()
	jobs := make(chan job, 1000)
	schedule(t.Context(), cfg, start, newGenerator(cfg, "p-"), jobs)
	close(jobs)
	var due []time.Duration
	for j := range jobs {
		due = append(due, j.intended.Sub(start))
	}
	if len(due) != 40 {
		t.Fatalf("%d jobs, want 20 + 20", len(due))
	}
	if due[1] != 5*time.Millisecond || due[21]-due[20] != 2500*time.Microsecond {
		t.Errorf("intervals %v and %v, want 5ms then 2.5ms", due[1], due[21]-due[20])
	}
}

func TestServerLatencyFromTheIngestHistogram(t *testing.T) {
	exposition := func(counts ...int) string {
		var b strings.Builder
		for i, le := range []string{"0.001", "0.002", "0.004", "+Inf"} {
			fmt.Fprintf(&b, "kappa_http_request_seconds_bucket{method=\"post\",le=\"%s\"} %d\n", le, counts[i])
			fmt.Fprintf(&b, "kappa_http_request_seconds_bucket{method=\"get\",le=\"%s\"} 1000\n", le)
		}
		return b.String()
	}
	body := exposition(5, 5, 5, 5) // before the load
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) }))
	defer srv.Close()
	before := readServerLatency(t.Context(), srv.Client(), srv.URL)
	body = exposition(55, 103, 104, 105) // 100 requests: 50 under 1 ms, 48 under 2 ms, 1 under 4 ms, 1 slower
	after := readServerLatency(t.Context(), srv.Client(), srv.URL)
	got := serverPercentiles(before, after)
	if got == nil || got.Count != 100 || got.P50 != 1 || got.P90 != 2 || got.P99 != 4 || got.Max != 4 {
		t.Fatalf("serverPercentiles = %+v", got)
	}
}
