// Package loadtest is Kappa's load-test harness: open-loop load over HTTP
// at a configured arrival rate, acknowledgement latency and freshness in
// HDR histograms, a correctness check of both stores at the end, and a
// terminal summary, a JSON result and an HTML report.
package loadtest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kappa-cqrs/kappa/secret"
)

// Step is one stage of the arrival rate: Rate commands per second for
// Duration.
type Step struct {
	Rate     float64       `json:"rate"`
	Duration time.Duration `json:"duration"`
}

// ParseSteps parses "2000:30s,4000:30s" into steps.
func ParseSteps(s string) ([]Step, error) {
	var steps []Step
	for _, part := range strings.Split(s, ",") {
		rate, dur, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("ramp step %q is not rate:duration", part)
		}
		r, err := strconv.ParseFloat(rate, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("ramp step %q: rate must be a positive number", part)
		}
		d, err := time.ParseDuration(dur)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("ramp step %q: duration must be positive, like 30s", part)
		}
		steps = append(steps, Step{Rate: r, Duration: d})
	}
	return steps, nil
}

// ParseMix parses "add=50,remove=10,checkout=5,publish=15,update=15,invalid=5";
// kinds left out weigh 0.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return m, fmt.Errorf("mix %q: want kind=weight with a non-negative integer weight", part)
		}
		switch k {
		case "add":
			m.AddProduct = n
		case "remove":
			m.RemoveProduct = n
		case "checkout":
			m.Checkout = n
		case "publish":
			m.Publish = n
		case "update":
			m.Update = n
		case "invalid":
			m.Invalid = n
		default:
			return m, fmt.Errorf("mix %q: unknown kind %q; one of add, remove, checkout, publish, update, invalid", part, k)
		}
	}
	if m == (Mix{}) {
		return m, fmt.Errorf("mix %q: every weight is 0; give at least one kind a positive weight", s)
	}
	return m, nil
}

// Mix is the share of each kind of command, in percent; they need not add
// up to 100 (they are weights).
type Mix struct {
	AddProduct    int `json:"add_product"`
	RemoveProduct int `json:"remove_product"`
	Checkout      int `json:"checkout"`
	Publish       int `json:"publish"`
	Update        int `json:"update"`
	// Invalid commands are refused at the door (422) and must leave no trace.
	Invalid int `json:"invalid"`
}

// Config configures a run. Zero values take the documented defaults.
type Config struct {
	// Target is the base URL of Kappa's HTTP API. Default http://127.0.0.1:8080.
	Target string `json:"target"`
	// MetricsURLs are scraped for the projections' progress
	// (kappa_projection_commands_through). Default
	// http://127.0.0.1:9090/metrics, the ops address of `kappa dev`, which
	// carries every role's metrics.
	MetricsURLs []string `json:"metrics_urls"`
	// APIKey is sent as Authorization: Bearer on every request. Default
	// none (an ingest with --auth none).
	APIKey secret.Value `json:"-"`
	// PreferWait, if positive, sends Prefer: wait with every request, so
	// that each answer comes with the processor's decision: the latency
	// measured is then the decision's, and a rejection by a business rule
	// (409) counts as answered. Default 0: acknowledgements only.
	PreferWait time.Duration `json:"prefer_wait"`
	// IngestMetricsURL is ingest's metrics, on its ops address: its
	// request latency and its process. Default the first of MetricsURLs.
	IngestMetricsURL string `json:"ingest_metrics_url"`
	// Steps of the arrival rate. Default one step of 1000/s for 30s.
	Steps []Step `json:"steps"`
	// Connections bounds concurrent requests. Default 32.
	Connections int `json:"connections"`
	// BatchSize > 1 sends POST /v1/commands:batch with that many commands;
	// 1 sends single commands. Default 1.
	BatchSize int `json:"batch_size"`
	// Mix of command kinds. Default 50/10/5/15/15/5.
	Mix Mix `json:"mix"`
	// Carts and Articles size the live key space (see generator). Default
	// 10000 and 2000.
	Carts    int `json:"carts"`
	Articles int `json:"articles"`
	// Zipf > 1 skews keys with that exponent; 0 picks keys uniformly.
	Zipf float64 `json:"zipf"`
	// Seed makes the command sequence repeatable. Default 1.
	Seed uint64 `json:"seed"`
	// FreshnessEvery samples one command in this many for freshness. Default 20.
	FreshnessEvery int `json:"freshness_every"`
	// ScrapeInterval is how often progress is scraped; it is the resolution
	// of freshness. Default 50ms.
	ScrapeInterval time.Duration `json:"scrape_interval"`
	// CatchUpTimeout bounds the wait for the projections after the load,
	// and for the warm-up command before it. Default 2m.
	CatchUpTimeout time.Duration `json:"catch_up_timeout"`
	// PostgresURL, PostgresSchema, ClickHouseAddr and ClickHouseDatabase
	// locate the stores for the correctness check; it is skipped without
	// them.
	PostgresURL        string `json:"-"`
	PostgresSchema     string `json:"postgres_schema"`
	ClickHouseAddr     string `json:"clickhouse_addr"`
	ClickHouseDatabase string `json:"clickhouse_database"`
	// OutDir receives result.json and report.html. Default "loadtest-results".
	OutDir string `json:"-"`
	// Progress receives a line per second; nil prints nothing.
	Progress func(string) `json:"-"`
}

func (c *Config) setDefaults() {
	if c.Target == "" {
		c.Target = "http://127.0.0.1:8080"
	}
	c.Target = strings.TrimRight(c.Target, "/")
	if len(c.MetricsURLs) == 0 {
		c.MetricsURLs = []string{"http://127.0.0.1:9090/metrics"}
	}
	if c.IngestMetricsURL == "" {
		c.IngestMetricsURL = c.MetricsURLs[0]
	}
	if len(c.Steps) == 0 {
		c.Steps = []Step{{Rate: 1000, Duration: 30 * time.Second}}
	}
	if c.Connections == 0 {
		c.Connections = 32
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1
	}
	if c.Mix == (Mix{}) {
		c.Mix = Mix{AddProduct: 50, RemoveProduct: 10, Checkout: 5, Publish: 15, Update: 15, Invalid: 5}
	}
	if c.Carts == 0 {
		c.Carts = 10000
	}
	if c.Articles == 0 {
		c.Articles = 2000
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.FreshnessEvery == 0 {
		c.FreshnessEvery = 20
	}
	if c.ScrapeInterval == 0 {
		c.ScrapeInterval = 50 * time.Millisecond
	}
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = 2 * time.Minute
	}
	if c.PostgresSchema == "" {
		c.PostgresSchema = "kappa"
	}
	if c.ClickHouseDatabase == "" {
		c.ClickHouseDatabase = "kappa"
	}
	if c.OutDir == "" {
		c.OutDir = "loadtest-results"
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	for _, s := range c.Steps {
		if s.Rate <= 0 || s.Duration <= 0 {
			errs = append(errs, errors.New("loadtest: every step needs a positive rate and duration"))
			break
		}
	}
	if c.Connections < 1 || c.BatchSize < 1 || c.Carts < 1 || c.Articles < 1 || c.FreshnessEvery < 1 {
		errs = append(errs, errors.New("loadtest: connections, batch size, carts, articles and freshness-every must be positive"))
	}
	if c.Zipf != 0 && c.Zipf <= 1 {
		errs = append(errs, errors.New("loadtest: zipf must be greater than 1, or 0 for uniform keys"))
	}
	m := c.Mix
	if m.AddProduct < 0 || m.RemoveProduct < 0 || m.Checkout < 0 || m.Publish < 0 || m.Update < 0 || m.Invalid < 0 ||
		m.AddProduct+m.RemoveProduct+m.Checkout+m.Publish+m.Update+m.Invalid == 0 {
		errs = append(errs, errors.New("loadtest: mix weights must be non-negative and not all zero"))
	}
	return errors.Join(errs...)
}

// Duration is the length of the whole load.
func (c *Config) Duration() time.Duration {
	var d time.Duration
	for _, s := range c.Steps {
		d += s.Duration
	}
	return d
}
