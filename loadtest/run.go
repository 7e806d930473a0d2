package loadtest

// This file is one load-test run from schedule to report; its steps share
// the run's state, and it is longer than the usual 400 lines for that.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/hostcpu"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Projections whose freshness is measured.
var projections = []string{"clickhouse", "postgres"}

type job struct {
	intended time.Time
	body     []byte
	commands int
	invalid  bool
	sampled  []bool
}

type sample struct {
	pos     schemas.Position
	ackedAt time.Time
	second  int
	done    map[string]bool
}

// recorder collects what the run sees. Latency histograms are in
// microseconds, from 1µs to 60s at 3 significant digits.
type recorder struct {
	mu        sync.Mutex
	start     time.Time
	ack       *hdrhistogram.Histogram
	fresh     map[string]*hdrhistogram.Histogram
	seconds   []*second
	sent      int64
	acked     int64
	refused   int64 // invalid commands refused as they must be
	errors    int64
	unexpect  int64 // valid commands refused, or invalid ones accepted
	lastPos   map[int32]int64
	pending   []*sample
	through   map[string]map[int32]int64
	peakRSS   map[string]float64 // MiB by metrics endpoint
	roleOf    map[string]string  // metrics endpoint -> the role its metrics show
	lastError string
}

type second struct {
	acked, errors int64
	ack           *hdrhistogram.Histogram
	fresh         map[string]*hdrhistogram.Histogram
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

func newRecorder(start time.Time, seconds int) *recorder {
	r := &recorder{start: start, ack: newHist(), fresh: map[string]*hdrhistogram.Histogram{},
		lastPos: map[int32]int64{}, through: map[string]map[int32]int64{}, peakRSS: map[string]float64{},
		roleOf: map[string]string{}}
	for _, p := range projections {
		r.fresh[p] = newHist()
		r.through[p] = map[int32]int64{}
	}
	r.grow(seconds)
	return r
}

func (r *recorder) grow(n int) {
	for len(r.seconds) <= n {
		s := &second{ack: newHist(), fresh: map[string]*hdrhistogram.Histogram{}}
		for _, p := range projections {
			s.fresh[p] = newHist()
		}
		r.seconds = append(r.seconds, s)
	}
}

func (r *recorder) secondOf(t time.Time) *second {
	i := max(0, int(t.Sub(r.start)/time.Second))
	r.grow(i)
	return r.seconds[i]
}

// Run drives the load, waits for the projections, checks the stores and
// writes the result files.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	runID := strconv.FormatInt(time.Now().Unix(), 36)
	prefix := "lt" + runID + "-"
	gen := newGenerator(cfg, prefix)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: cfg.Connections, MaxIdleConnsPerHost: cfg.Connections, MaxConnsPerHost: cfg.Connections,
	}}

	took, err := warmUp(ctx, client, cfg, runID)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "[loadtest] the deployment applied a first command in %s; starting the load\n", took.Round(time.Millisecond))

	start := time.Now().Add(100 * time.Millisecond)
	rec := newRecorder(start, int(cfg.Duration()/time.Second)+1)
	jobs := make(chan job, cfg.Connections*64)

	// Scrapes go uncompressed: gzipping a metrics page every 50 ms cost
	// each projector and the processor 7-10% of their CPU under load.
	scrapeClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	scrapeCtx, stopScraping := context.WithCancel(ctx)
	var scraping sync.WaitGroup
	scraping.Add(1)
	go func() { defer scraping.Done(); rec.scrape(scrapeCtx, scrapeClient, cfg) }()

	var workers sync.WaitGroup
	for range cfg.Connections {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				rec.send(ctx, client, cfg, j)
			}
		}()
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	go rec.progress(progressCtx, cfg)

	ingestMetrics := cfg.IngestMetricsURL
	processes := cfg.MetricsURLs
	if !slices.Contains(processes, ingestMetrics) {
		processes = append(slices.Clip(processes), ingestMetrics)
	}
	serverBefore := readServerLatency(ctx, client, ingestMetrics)
	cpuBefore := readProcesses(ctx, client, processes)
	serversBefore := hostcpu.Servers()
	schedule(ctx, cfg, start, gen, jobs)
	close(jobs)
	workers.Wait()
	loadEnd := time.Now()
	stopProgress()
	serverAfter := readServerLatency(ctx, client, ingestMetrics)
	cpuAfter := readProcesses(ctx, client, processes)
	serversAfter := hostcpu.Servers()

	caughtUp := rec.waitCaughtUp(ctx, cfg.CatchUpTimeout)
	stopScraping()
	scraping.Wait()

	res := rec.result(cfg, runID, loadEnd.Sub(start), caughtUp)
	res.IngestAck = serverPercentiles(serverBefore, serverAfter)
	res.CPUSeconds = cpuUsed(cpuBefore, cpuAfter)
	for server, after := range serversAfter {
		if used := after - serversBefore[server]; used > 0 {
			res.CPUSeconds["server "+server+" (this machine)"] = used
		}
	}
	if cfg.PostgresURL != "" && cfg.ClickHouseAddr != "" {
		res.Checks = verify(ctx, cfg, prefix, rec)
	}
	res.Passed = caughtUp && rec.unexpect == 0 && rec.errors == 0
	for _, c := range res.Checks {
		res.Passed = res.Passed && c.OK
	}
	if err := writeResults(cfg.OutDir, res); err != nil {
		return res, err
	}
	return res, nil
}

// schedule emits jobs at their intended times, open loop: a job's latency
// counts from when it was due, so a slow server cannot slow the load down
// and hide its own latency.
func schedule(ctx context.Context, cfg Config, start time.Time, gen *generator, jobs chan<- job) {
	stepStart := start
	sampleCount := 0
	for _, step := range cfg.Steps {
		interval := time.Duration(float64(time.Second) * float64(cfg.BatchSize) / step.Rate)
		for due := stepStart; due.Before(stepStart.Add(step.Duration)); due = due.Add(interval) {
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			var batch [][]byte
			var sampled []bool
			for range cfg.BatchSize {
				body, invalid := gen.next()
				if invalid {
					// An invalid command would refuse its whole batch, so it
					// travels alone.
					jobs <- job{intended: due, body: body, commands: 1, invalid: true, sampled: []bool{false}}
					continue
				}
				sampleCount++
				batch = append(batch, body)
				sampled = append(sampled, sampleCount%cfg.FreshnessEvery == 0)
			}
			if len(batch) == 0 {
				continue
			}
			body := batch[0]
			if cfg.BatchSize > 1 {
				body = append(append([]byte("["), bytes.Join(batch, []byte(","))...), ']')
			}
			jobs <- job{intended: due, body: body, commands: len(batch), sampled: sampled}
		}
		stepStart = stepStart.Add(step.Duration)
	}
}

type commandView struct {
	CommandID string `json:"command_id"`
	Position  string `json:"position"`
}

func (r *recorder) send(ctx context.Context, client *http.Client, cfg Config, j job) {
	path := "/v1/commands"
	if cfg.BatchSize > 1 && !j.invalid {
		path = "/v1/commands:batch"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Target+path, bytes.NewReader(j.body))
	if err != nil {
		r.fail(j, err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if !cfg.APIKey.IsZero() {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey.Reveal())
	}
	if cfg.PreferWait > 0 {
		req.Header.Set("Prefer", fmt.Sprintf("wait=%d", int(math.Ceil(cfg.PreferWait.Seconds()))))
	}
	resp, err := client.Do(req)
	if err != nil {
		r.fail(j, err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	now := time.Now()
	if err != nil {
		r.fail(j, err.Error())
		return
	}
	if j.invalid {
		r.mu.Lock()
		r.sent++
		if resp.StatusCode == http.StatusUnprocessableEntity {
			r.refused++
		} else {
			r.unexpect++
			r.lastError = fmt.Sprintf("invalid command answered %d: %.200s", resp.StatusCode, body)
		}
		r.mu.Unlock()
		return
	}
	decided := cfg.PreferWait > 0 && resp.StatusCode == http.StatusConflict && path == "/v1/commands"
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK && !decided {
		r.fail(j, fmt.Sprintf("status %d: %.200s", resp.StatusCode, body))
		return
	}
	var views []commandView
	if path == "/v1/commands" {
		var v commandView
		err = json.Unmarshal(body, &v)
		views = []commandView{v}
	} else {
		var b struct{ Commands []commandView }
		err = json.Unmarshal(body, &b)
		views = b.Commands
	}
	if err != nil || len(views) != j.commands {
		r.fail(j, fmt.Sprintf("unreadable answer: %.200s", body))
		return
	}
	latency := now.Sub(j.intended).Microseconds()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent += int64(j.commands)
	r.acked += int64(j.commands)
	_ = r.ack.RecordValue(max(1, latency))
	s := r.secondOf(j.intended)
	s.acked += int64(j.commands)
	_ = s.ack.RecordValue(max(1, latency))
	for i, v := range views {
		pos, err := schemas.ParsePosition(v.Position)
		if err != nil {
			continue
		}
		r.lastPos[pos.Partition] = max(r.lastPos[pos.Partition], pos.Offset)
		if j.sampled[i] {
			r.pending = append(r.pending, &sample{pos: pos, ackedAt: now, second: int(j.intended.Sub(r.start) / time.Second), done: map[string]bool{}})
		}
	}
}

func (r *recorder) fail(j job, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent += int64(j.commands)
	r.errors += int64(j.commands)
	r.secondOf(j.intended).errors += int64(j.commands)
	r.lastError = msg
}

// scrape reads the projections' progress from the metrics endpoints and
// settles freshness samples: a sample is fresh in a projection once that
// projection has applied its command's outcome.
func (r *recorder) scrape(ctx context.Context, client *http.Client, cfg Config) {
	t := time.NewTicker(cfg.ScrapeInterval)
	defer t.Stop()
	ingestMetrics := cfg.IngestMetricsURL
	var lastSlowScrape time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		through := map[string]map[int32]int64{}
		// Only projections report progress; the memory of the other
		// processes (ingest, processors) is read once a second, not at
		// the scrape interval, to keep load off the measured path.
		everything := time.Since(lastSlowScrape) >= time.Second
		urls := make([]string, 0, len(cfg.MetricsURLs)+1)
		for _, endpoint := range cfg.MetricsURLs {
			if everything || r.reportsProgress(endpoint) {
				urls = append(urls, endpoint)
			}
		}
		if everything {
			lastSlowScrape = time.Now()
			if !slices.Contains(urls, ingestMetrics) {
				urls = append(urls, ingestMetrics)
			}
		}
		memory := make([]processMemory, 0, len(urls))
		for _, endpoint := range urls {
			if !everything {
				endpoint = progressOnly(endpoint)
			}
			memory = append(memory, readMetrics(ctx, client, endpoint, through))
		}
		now := time.Now()
		r.mu.Lock()
		for i, m := range memory {
			r.peakRSS[urls[i]] = max(r.peakRSS[urls[i]], m.rssMiB)
			if m.role != "" {
				r.roleOf[urls[i]] = m.role
			}
		}
		for proj, parts := range through {
			if _, known := r.through[proj]; !known {
				continue
			}
			for p, o := range parts {
				r.through[proj][p] = max(r.through[proj][p], o)
			}
		}
		kept := r.pending[:0]
		for _, s := range r.pending {
			for _, proj := range projections {
				if !s.done[proj] && r.through[proj][s.pos.Partition] >= s.pos.Offset {
					s.done[proj] = true
					f := max(1, now.Sub(s.ackedAt).Microseconds())
					_ = r.fresh[proj].RecordValue(f)
					r.grow(s.second)
					_ = r.seconds[s.second].fresh[proj].RecordValue(f)
				}
			}
			if len(s.done) < len(projections) {
				kept = append(kept, s)
			}
		}
		r.pending = kept
		r.mu.Unlock()
	}
}

// progressOnly asks a Kappa metrics endpoint for the progress family alone
// (an endpoint that ignores the parameter serves the whole page, which
// reads the same).
func progressOnly(metricsURL string) string {
	u, err := url.Parse(metricsURL)
	if err != nil {
		return metricsURL
	}
	q := u.Query()
	q.Add("name", strings.TrimSuffix(throughMetric, "{"))
	u.RawQuery = q.Encode()
	return u.String()
}

// reportsProgress tells whether a metrics endpoint carries projection
// progress, or is not known yet not to.
func (r *recorder) reportsProgress(endpoint string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	role, known := r.roleOf[endpoint]
	return !known || strings.Contains(role, "projector")
}

const (
	throughMetric   = "kappa_projection_commands_through{"
	rssMetric       = "process_resident_memory_bytes "
	cpuMetric       = "process_cpu_seconds_total "
	processorMetric = "kappa_processor_commands_total"
	httpMetric      = "kappa_http_requests_total"
)

// processMemory is the resident memory and the CPU time so far of the
// process behind a metrics endpoint, and the role its metrics show (""
// until they show one).
type processMemory struct {
	rssMiB     float64
	cpuSeconds float64
	role       string
}

// readProcesses reads the processes behind metrics endpoints, by endpoint.
func readProcesses(ctx context.Context, client *http.Client, urls []string) map[string]processMemory {
	out := make(map[string]processMemory, len(urls))
	for _, url := range urls {
		out[url] = readMetrics(ctx, client, url, map[string]map[int32]int64{})
	}
	return out
}

// cpuUsed is the CPU time each process used between two readings, by role;
// processes that do not report CPU time are left out.
func cpuUsed(before, after map[string]processMemory) map[string]float64 {
	used := map[string]float64{}
	for url, a := range after {
		b, ok := before[url]
		if !ok || a.cpuSeconds == 0 {
			continue
		}
		name := a.role
		if name == "" {
			name = url
		}
		used[name] = a.cpuSeconds - b.cpuSeconds
	}
	return used
}

// readMetrics reads a metrics endpoint: the projections' progress into
// through, and the memory of the process behind it.
func readMetrics(ctx context.Context, client *http.Client, url string, through map[string]map[int32]int64) processMemory {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return processMemory{}
	}
	resp, err := client.Do(req)
	if err != nil {
		return processMemory{}
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	roles := map[string]bool{}
	var m processMemory
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, rssMetric):
			bytes, _ := strconv.ParseFloat(strings.TrimSpace(line[len(rssMetric):]), 64)
			m.rssMiB = bytes / (1 << 20)
		case strings.HasPrefix(line, cpuMetric):
			m.cpuSeconds, _ = strconv.ParseFloat(strings.TrimSpace(line[len(cpuMetric):]), 64)
		case strings.HasPrefix(line, processorMetric):
			roles["processor"] = true
		case strings.HasPrefix(line, httpMetric):
			roles["ingest"] = true
		case strings.HasPrefix(line, throughMetric):
			if proj, part, value, ok := parseThrough(line[len(throughMetric):]); ok {
				roles["projector "+proj] = true
				if through[proj] == nil {
					through[proj] = map[int32]int64{}
				}
				through[proj][part] = max(through[proj][part], value)
			}
		}
	}
	m.role = strings.Join(slices.Sorted(maps.Keys(roles)), " + ")
	return m
}

// parseThrough reads the labels and value of a commands-through sample.
func parseThrough(s string) (projection string, partition int32, value int64, ok bool) {
	labels, v, ok := strings.Cut(s, "} ")
	if !ok {
		return "", 0, 0, false
	}
	part := int64(-1)
	for _, l := range strings.Split(labels, ",") {
		k, lv, _ := strings.Cut(l, "=")
		lv = strings.Trim(lv, `"`)
		switch k {
		case "projection":
			projection = lv
		case "partition":
			part, _ = strconv.ParseInt(lv, 10, 32)
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if projection == "" || part < 0 || err != nil {
		return "", 0, 0, false
	}
	return projection, int32(part), int64(f), true
}

// waitCaughtUp waits until every projection has applied the last
// acknowledged command of every partition.
func (r *recorder) waitCaughtUp(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if r.lag() == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return r.lag() == 0
}

// lag is the largest number of commands a projection is behind on a
// partition.
func (r *recorder) lag() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var worst int64
	for _, proj := range projections {
		for p, last := range r.lastPos {
			through, ok := r.through[proj][p]
			if !ok {
				through = -1
			}
			worst = max(worst, last-through)
		}
	}
	return worst
}

func (r *recorder) progress(ctx context.Context, cfg Config) {
	if cfg.Progress == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastAcked int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lag := r.lag()
		r.mu.Lock()
		rate := r.acked - lastAcked
		lastAcked = r.acked
		line := fmt.Sprintf("%5.0fs  acked %7d/s  ack p99 %7.2fms  errors %d  fresh p99 pg %7.1fms ch %7.1fms  lag %d",
			time.Since(r.start).Seconds(), rate, ms(r.ack.ValueAtQuantile(99)), r.errors,
			ms(r.fresh["postgres"].ValueAtQuantile(99)), ms(r.fresh["clickhouse"].ValueAtQuantile(99)), lag)
		r.mu.Unlock()
		cfg.Progress(line)
	}
}

func ms(us int64) float64 { return float64(us) / 1000 }

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m.Memory = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	return m
}
