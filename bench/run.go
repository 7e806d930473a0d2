package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kappa-cqrs/kappa/hostcpu"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
)

// Measured is one case with its costs.
type Measured struct {
	CaseResult
	RowsPerSecond float64 `json:"rows_per_second"`
	CPUSeconds    float64 `json:"cpu_seconds"`        // the case's process
	ServerCPU     float64 `json:"server_cpu_seconds"` // ClickHouse and Postgres servers
	CPUPerMillion float64 `json:"cpu_seconds_per_million_rows"`
	Err           string  `json:"error,omitempty"`
}

// Run prepares the topic, runs every case as `bin bench-case NAME` with the
// configuration in the environment, and returns the measurements.
func Run(ctx context.Context, cfg Config, bin string, progress func(string)) ([]Measured, error) {
	cl, err := cfg.kafka().NewClient()
	if err != nil {
		return nil, err
	}
	names := kafka.TopicsFor(cfg.Prefix)
	defer cl.Close()
	if _, err := kafka.EnsureTopics(ctx, cl, names, kafka.TopicConfig{Partitions: cfg.Partitions}); err != nil {
		return nil, err
	}
	defer func() {
		// The bench's topics are of no use after the run; the broker's disk is.
		_, _ = kadm.NewClient(cl).DeleteTopics(context.WithoutCancel(ctx), names.Commands, names.Events, names.EventsDeadLetter, names.State)
	}()
	progress(fmt.Sprintf("producing %d events into %s", cfg.Events, eventsTopic(cfg)))
	if err := produceEvents(ctx, cfg); err != nil {
		return nil, err
	}
	if slices.ContainsFunc(cfg.cases(), func(c string) bool { return processorCases[c] }) {
		commandNames := commandTopics(cfg)
		defer func() {
			topics := []string{commandNames.Commands}
			for c := range processorCases {
				t := caseTopics(cfg, c)
				topics = append(topics, t.Events, t.EventsDeadLetter, t.State)
			}
			_, _ = kadm.NewClient(cl).DeleteTopics(context.WithoutCancel(ctx), topics...)
		}()
		if _, err := kafka.EnsureTopics(ctx, cl, commandNames, kafka.TopicConfig{Partitions: cfg.Partitions}); err != nil {
			return nil, err
		}
		progress(fmt.Sprintf("producing %d commands into %s", cfg.Events, commandNames.Commands))
		if err := produceCommands(ctx, cfg); err != nil {
			return nil, err
		}
	}
	encoded, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var results []Measured
	for _, name := range cfg.cases() {
		progress("running " + name)
		before := serverCPU()
		cmd := exec.CommandContext(ctx, bin, "bench-case", name)
		cmd.Env = append(os.Environ(), "KAPPA_BENCH_CONFIG="+string(encoded))
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		runErr := cmd.Run()
		m := Measured{ServerCPU: serverCPU() - before}
		if cmd.ProcessState == nil {
			return results, fmt.Errorf("start %s: %w", name, runErr)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.CPUSeconds = tv(ru.Utime) + tv(ru.Stime)
		}
		if runErr != nil {
			m.Case, m.Err = name, strings.TrimSpace(runErr.Error()+": "+lastLine(errOut.String()))
		} else if err := json.Unmarshal(out.Bytes(), &m.CaseResult); err != nil {
			m.Case, m.Err = name, "unreadable result: "+out.String()
		}
		if m.Seconds > 0 {
			m.RowsPerSecond = float64(m.Rows) / m.Seconds
			m.CPUPerMillion = (m.CPUSeconds + m.ServerCPU) / float64(m.Rows) * 1e6
		}
		results = append(results, m)
		if err := dropCaseData(ctx, cfg); err != nil {
			return results, fmt.Errorf("drop what %s wrote: %w", name, err)
		}
		progress(fmt.Sprintf("  %-24s %10.0f rows/s  %6.2f s  cpu %6.2f s + servers %6.2f s  rss %6.1f MiB %s", m.Case, m.RowsPerSecond, m.Seconds, m.CPUSeconds, m.ServerCPU, m.PeakRSSMiB, m.Err))
	}
	return results, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// serverCPU sums the CPU seconds of every ClickHouse and Postgres
// process now running.
func serverCPU() float64 {
	servers := hostcpu.Servers()
	return servers[hostcpu.ClickHouse] + servers[hostcpu.Postgres]
}

// Markdown renders the results and their ratios to the brief's baselines.
func Markdown(cfg Config, results []Measured, command string) string {
	by := map[string]Measured{}
	for _, m := range results {
		by[m.Case] = m
	}
	ratio := func(a, b string) string {
		x, y := by[a], by[b]
		if x.RowsPerSecond == 0 || y.RowsPerSecond == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", x.RowsPerSecond/y.RowsPerSecond)
	}
	var b strings.Builder
	b.WriteString(`# Benchmarks

Written by ` + "`make bench`" + ` (package bench). Each case runs in its own process on the
same data; CPU seconds are the case's process (user + system) and, separately,
every ClickHouse and Postgres server process over the same interval; peak RSS
is the case's process (VmHWM). A case reads a pre-filled topic as fast as it
can, so franz-go keeps a full fetch buffered ahead; the memory of the roles
of a deployment at load is in the load-test results (docs/LOADTEST.md).

- clickhouse-kappa / postgres-kappa: Kappa's projection runtime and sink from
  an empty store until every event is applied.
- clickhouse-bare: the ceiling, the same rows into the same two tables
  (events, cart_lines) with one clickhouse-go batch per poll, in one
  goroutine (poll, decode, insert); Kappa's runtime decodes the next batch
  while the store writes the previous one, which is how it can pass it.
- clickhouse-kafka-engine: ClickHouse's Kafka table engine and a materialized
  view into a MergeTree table, reading the same payloads from an in-process
  copy of the topic (kfake): the librdkafka inside Debian's ClickHouse 18.16
  speaks protocol versions Kafka 4 no longer serves (KIP-896).
- clickhouse-kappa-embedded: Kappa's projection reading that same copy, for
  the same-topic comparison.
- postgres-bare: the ceiling the brief names, COPY into a temporary table,
  then INSERT ... ON CONFLICT with a version guard (cart_items and carts).
  Kappa's projection also keeps positions in the same transaction, locks
  and version-checks each cart, and folds each batch per cart line.
- ingest-kappa / ingest-bare: the same commands through Kappa's HTTP batch
  endpoint, and through a bare idempotent acks=all franz-go producer.
- processor-kappa: Kappa's processor with an empty state store deciding a
  topic of commands (70% products added to 100,000 carts, 30% articles
  published) until every one is decided: events, outcomes and the state
  changelog in one transaction per poll.
- processor-bare: the brief's bare transactional consume-produce, a
  franz-go transactional session copying each command's bytes to an
  events topic with its offsets, one transaction per poll of up to 5000.

`)
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Measured %s on %s: %d CPUs, %s, %s; every server on the same machine.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Fprintf(&b, "Reproduce: `%s`\n\n%d events (cart.product_added over 10000 carts), %d partitions.\n\n", command, cfg.Events, cfg.Partitions)
	b.WriteString("| case | rows/s | seconds | CPU s (process) | CPU s (servers) | CPU s per million rows | peak RSS MiB | note |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, m := range results {
		note := m.Note
		if m.Err != "" {
			note = "error: " + m.Err
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.1f | %s |\n", m.Case, m.RowsPerSecond, m.Seconds, m.CPUSeconds, m.ServerCPU, m.CPUPerMillion, m.PeakRSSMiB, note)
	}
	b.WriteString("\n| ratio | measured | target |\n|---|---:|---:|\n")
	fmt.Fprintf(&b, "| ClickHouse projection / ClickHouse Kafka engine, both on the embedded copy of the topic | %s | ≥ 4x |\n", ratio("clickhouse-kappa-embedded", "clickhouse-kafka-engine"))
	fmt.Fprintf(&b, "| ClickHouse projection on Kafka / Kafka engine on the embedded copy | %s | — |\n", ratio("clickhouse-kappa", "clickhouse-kafka-engine"))
	fmt.Fprintf(&b, "| ClickHouse projection / bare clickhouse-go insert | %s | ≥ 0.8x |\n", ratio("clickhouse-kappa", "clickhouse-bare"))
	fmt.Fprintf(&b, "| Postgres projection / bare pgx staged upsert | %s | ≥ 0.8x |\n", ratio("postgres-kappa", "postgres-bare"))
	fmt.Fprintf(&b, "| ingest (HTTP) / bare franz-go producer | %s | — |\n", ratio("ingest-kappa", "ingest-bare"))
	fmt.Fprintf(&b, "| processor / bare transactional consume-produce | %s | — |\n", ratio("processor-kappa", "processor-bare"))
	return b.String()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// dropCaseData removes what the cases wrote to the stores, so that one
// case's tables (and the servers' background work on them: autovacuum,
// merges) do not weigh on the next case or on later runs.
func dropCaseData(ctx context.Context, cfg Config) error {
	var errs []error
	pg, err := pgx.Connect(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer func() { _ = pg.Close(context.WithoutCancel(ctx)) }()
	ch, err := clickhouse.Open(ctx, clickhouse.Config{Addr: cfg.ClickHouseAddr, Database: "default"})
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	for _, suffix := range []string{"_kappa", "_bare", "_engine", "_ingest"} {
		if _, err := pg.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{cfg.PostgresSchema + suffix}.Sanitize()+" CASCADE"); err != nil {
			errs = append(errs, err)
		}
		if err := ch.Conn().Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.ClickHouseDatabase+suffix); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
