// Command kappa runs Kappa's roles. Every role can run as its own process,
// so each can be deployed and scaled on its own; `kappa dev` runs them all
// in one process with an embedded Kafka broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/bench"
	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/loadtest"
	"github.com/kappa-cqrs/kappa/roles"
	"github.com/kappa-cqrs/kappa/schemas"
	"github.com/kappa-cqrs/kappa/secret"
)

// devAPIKeyFile is where kappa dev, with the default --data-dir, keeps the
// API key it made.
const devAPIKeyFile = ".data/dev-api-key" //nolint:gosec // G101: a file name, not a credential

type logFlags struct {
	LogLevel  slog.Level `env:"KAPPA_LOG_LEVEL" default:"info" help:"Log level: debug, info, warn, error."`
	LogFormat string     `env:"KAPPA_LOG_FORMAT" default:"text" enum:"text,json" help:"Log format: text or json."`
}

type cli struct {
	logFlags
	Ingest    ingestCmd    `cmd:"" help:"Serve the HTTP API: command intake, outcomes and lookups."`
	Process   processCmd   `cmd:"" help:"Run a command processor."`
	Project   projectCmd   `cmd:"" help:"Run a projection into ClickHouse or Postgres."`
	Migrate   migrateCmd   `cmd:"" help:"Create the topics and apply the migrations of both stores, then exit."`
	Dev       devCmd       `cmd:"" help:"Run every role in one process with an embedded Kafka broker."`
	DLQ       dlqCmd       `cmd:"" name:"dlq" help:"List, show, redrive and discard parked dead letters of a projection."`
	APIKey    apiKeyCmd    `cmd:"" name:"apikey" help:"Create, list and revoke the API keys ingest accepts."`
	Loadtest  loadtestCmd  `cmd:"" help:"Drive open-loop load through the HTTP API, measure latency and freshness, and check the stores."`
	Bench     benchCmd     `cmd:"" help:"Measure the projections, ingest and the processor against their baselines (Kafka engine, bare inserts, bare upserts, bare producer, bare transactional consume-produce)."`
	BenchCase benchCaseCmd `cmd:"" name:"bench-case" hidden:"" help:"Run one bench case (used by kappa bench)."`
}

type benchCmd struct {
	kafkaFlags
	postgresFlags
	clickhouseFlags
	Events   int      `default:"500000" help:"Events to project, commands to send or decide, in each case."`
	Doc      string   `help:"Write the results as Markdown to this file."`
	Profiles string   `help:"Write a CPU and an allocation profile of each case into this directory (go tool pprof)." type:"path"`
	Cases    []string `help:"Run only these cases (comma-separated); all by default." enum:"clickhouse-kappa,clickhouse-bare,clickhouse-kafka-engine,clickhouse-kappa-embedded,postgres-kappa,postgres-bare,ingest-kappa,ingest-bare,processor-kappa,processor-bare"`
}

func (c *benchCmd) Run(ctx context.Context, _ roles.Config) error {
	run := "bench" + strconv.FormatInt(time.Now().Unix(), 36)
	cfg := bench.Config{Brokers: c.Brokers, Events: c.Events, Partitions: c.Partitions, Prefix: run,
		PostgresURL: c.PostgresURL, PostgresSchema: run, ClickHouseAddr: c.ClickHouseAddr, ClickHouseDatabase: run, Only: c.Cases, ProfileDir: c.Profiles}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	results, err := bench.Run(ctx, cfg, self, func(line string) { fmt.Fprintln(os.Stderr, line) })
	if err != nil {
		return err
	}
	md := bench.Markdown(cfg, results, "make bench")
	fmt.Print(md)
	if c.Doc != "" {
		// A document of the repository, read by everyone who reads it.
		return os.WriteFile(c.Doc, []byte(md), 0o644) //nolint:gosec // G306: a public document, not a secret
	}
	return nil
}

type benchCaseCmd struct {
	Case string `arg:"" help:"The case to run."`
}

func (c *benchCaseCmd) Run(ctx context.Context, _ roles.Config) error {
	var cfg bench.Config
	if err := json.Unmarshal([]byte(os.Getenv("KAPPA_BENCH_CONFIG")), &cfg); err != nil {
		return fmt.Errorf("KAPPA_BENCH_CONFIG: %w", err)
	}
	res, err := bench.RunCase(ctx, cfg, c.Case)
	if err != nil {
		return err
	}
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

type loadtestCmd struct {
	postgresFlags
	clickhouseFlags
	Target         string        `env:"KAPPA_LOADTEST_TARGET" default:"http://127.0.0.1:8080" help:"Base URL of the HTTP API."`
	MetricsURL     []string      `env:"KAPPA_LOADTEST_METRICS" help:"Metrics endpoints that carry kappa_projection_commands_through (default: http://127.0.0.1:9090/metrics, the ops address of kappa dev)."`
	APIKey         string        `name:"api-key" env:"KAPPA_LOADTEST_API_KEY" help:"API key to send as Authorization: Bearer; prefer --api-key-file."`
	APIKeyFile     string        `name:"api-key-file" env:"KAPPA_LOADTEST_API_KEY_FILE" type:"path" help:"File holding the API key (default: .data/dev-api-key when it exists, the key kappa dev made)."`
	IngestMetrics  string        `name:"ingest-metrics-url" env:"KAPPA_LOADTEST_INGEST_METRICS" help:"Ingest's metrics endpoint, on its ops address (default: the first of --metrics-url)."`
	Rate           float64       `default:"1000" help:"Commands per second (open loop)."`
	Duration       time.Duration `default:"30s" help:"How long to send at --rate."`
	Ramp           string        `help:"Steps of rate:duration instead of --rate/--duration, e.g. 1000:30s,2000:30s,4000:30s."`
	Connections    int           `default:"32" help:"Concurrent requests."`
	BatchSize      int           `default:"1" help:"Commands per request; above 1 uses POST /v1/commands:batch."`
	Mix            string        `default:"add=50,remove=10,checkout=5,publish=15,update=15,invalid=5" help:"Weights of the command kinds; invalid ones must be refused (422)."`
	Carts          int           `default:"10000" help:"Open carts at any time; a checkout frees its slot for a new cart."`
	Articles       int           `default:"2000" help:"Article slots; a publish puts a new article into its slot, updates go to the latest."`
	Zipf           float64       `default:"0" help:"Key skew: a Zipf exponent above 1, or 0 for uniform keys."`
	Seed           uint64        `default:"1" help:"Seed of the command sequence."`
	FreshnessEvery int           `default:"20" help:"Measure freshness for one command in this many."`
	Out            string        `default:"loadtest-results" type:"path" help:"Directory for result.json and report.html."`
	NoCheck        bool          `help:"Skip the correctness check of the stores."`
	PreferWait     time.Duration `name:"prefer-wait" help:"Send Prefer: wait with every request and measure the decision's latency instead of the acknowledgement's (409 rejections count as answered); e.g. 5s."`
}

// Validate refuses values the library would read as "use the default":
// on the command line a 0 is a mistake, not a wish for the default.
func (c *loadtestCmd) Validate() error {
	var errs []error
	for _, f := range []struct {
		name  string
		value int
	}{{"--connections", c.Connections}, {"--batch-size", c.BatchSize}, {"--carts", c.Carts}, {"--articles", c.Articles}, {"--freshness-every", c.FreshnessEvery}} {
		if f.value < 1 {
			errs = append(errs, fmt.Errorf("%s must be at least 1, got %d", f.name, f.value))
		}
	}
	if c.Ramp == "" && (c.Rate <= 0 || c.Duration <= 0) {
		errs = append(errs, fmt.Errorf("--rate and --duration must be positive, got %v and %v", c.Rate, c.Duration))
	}
	if c.Seed == 0 {
		errs = append(errs, errors.New("--seed must not be 0"))
	}
	if _, err := loadtest.ParseMix(c.Mix); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// apiKey is the key given, or else the one kappa dev wrote, so that a load
// test against a development system needs no flag.
func (c *loadtestCmd) apiKey() (secret.Value, error) {
	if c.APIKey == "" && c.APIKeyFile == "" {
		if _, err := os.Stat(devAPIKeyFile); err == nil {
			return secret.FromFile(devAPIKeyFile)
		}
	}
	return secretOf("api-key", c.APIKey, c.APIKeyFile)
}

func (c *loadtestCmd) Run(ctx context.Context, _ roles.Config) error {
	cfg := loadtest.Config{
		Target: c.Target, MetricsURLs: c.MetricsURL, IngestMetricsURL: c.IngestMetrics, Connections: c.Connections, BatchSize: c.BatchSize,
		Carts: c.Carts, Articles: c.Articles, Zipf: c.Zipf, Seed: c.Seed, FreshnessEvery: c.FreshnessEvery, OutDir: c.Out, PreferWait: c.PreferWait,
		Steps:    []loadtest.Step{{Rate: c.Rate, Duration: c.Duration}},
		Progress: func(line string) { fmt.Fprintln(os.Stderr, line) },
	}
	if c.Ramp != "" {
		steps, err := loadtest.ParseSteps(c.Ramp)
		if err != nil {
			return err
		}
		cfg.Steps = steps
	}
	mix, err := loadtest.ParseMix(c.Mix)
	if err != nil {
		return err
	}
	cfg.Mix = mix
	if cfg.APIKey, err = c.apiKey(); err != nil {
		return err
	}
	if !c.NoCheck {
		cfg.PostgresURL, cfg.PostgresSchema = c.PostgresURL, c.PostgresSchema
		cfg.ClickHouseAddr, cfg.ClickHouseDatabase = strings.Join(c.ClickHouseAddr, ","), c.ClickHouseDatabase
	}
	res, err := loadtest.Run(ctx, cfg)
	if res != nil {
		fmt.Print(res.Summary())
		fmt.Printf("wrote %s/result.json and %s/report.html\n", c.Out, c.Out)
	}
	if err != nil {
		return err
	}
	if !res.Passed {
		return errors.New("load test failed its checks")
	}
	return nil
}

type apiKeyCmd struct {
	Create apiKeyCreateCmd `cmd:"" help:"Make an API key; prints it alone on stdout, once: it is stored only as a hash."`
	List   apiKeyListCmd   `cmd:"" help:"List the API keys: id, tenant, name, scopes, when made and revoked."`
	Revoke apiKeyRevokeCmd `cmd:"" help:"Revoke an API key; every ingest stops taking it within --api-key-cache-ttl."`
}

type apiKeyCreateCmd struct {
	postgresFlags
	Tenant string `required:"" help:"The tenant the key acts for."`
	Scopes string `required:"" help:"Comma-separated scopes: commands:write, read."`
	Name   string `help:"A name to tell the key by in the list."`
}

func (c *apiKeyCreateCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	scopes, err := auth.ParseScopes(c.Scopes)
	if err != nil {
		return err
	}
	key, err := roles.APIKeyCreate(ctx, cfg, c.Tenant, scopes, c.Name)
	if err != nil {
		return err
	}
	fmt.Println(key)
	return nil
}

type apiKeyListCmd struct {
	postgresFlags
}

func (c *apiKeyListCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	return roles.APIKeyList(ctx, cfg, os.Stdout)
}

type apiKeyRevokeCmd struct {
	postgresFlags
	ID string `arg:"" help:"The key's id (kappa apikey list)."`
}

func (c *apiKeyRevokeCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	if err := roles.APIKeyRevoke(ctx, cfg, c.ID); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "revoked %s\n", c.ID)
	return nil
}

type dlqCmd struct {
	List    dlqListCmd    `cmd:"" help:"List the open dead letters of a projection, with counts."`
	Show    dlqShowCmd    `cmd:"" help:"Show one dead letter: headers and value."`
	Redrive dlqRedriveCmd `cmd:"" help:"Apply open dead letters that decode now, in order, and mark them redriven."`
	Discard dlqDiscardCmd `cmd:"" help:"Mark open dead letters as discarded; their aggregates flow again."`
}

type dlqTarget struct {
	kafkaFlags
	Projection string `enum:"clickhouse,postgres" required:"" help:"The projection: clickhouse or postgres."`
	Aggregate  string `help:"Only the dead letters of this aggregate id."`
	Position   string `help:"Only the dead letter at this position of the dead-letter topic (partition:offset)."`
	DryRun     bool   `help:"Say what would happen; change nothing."`
}

func (t dlqTarget) filter() (deadletter.Filter, error) {
	f := deadletter.Filter{AggregateID: t.Aggregate}
	if t.Position != "" {
		pos, err := schemas.ParsePosition(t.Position)
		if err != nil {
			return f, err
		}
		f.Position = &pos
	}
	return f, nil
}

type dlqListCmd struct {
	kafkaFlags
	Projection string `enum:"clickhouse,postgres" required:"" help:"The projection: clickhouse or postgres."`
}

func (c *dlqListCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	return roles.DLQList(ctx, cfg, c.Projection, os.Stdout)
}

type dlqShowCmd struct {
	kafkaFlags
	Position string `arg:"" help:"Position in the dead-letter topic, partition:offset, as dlq list prints it."`
}

func (c *dlqShowCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	pos, err := schemas.ParsePosition(c.Position)
	if err != nil {
		return err
	}
	return roles.DLQShow(ctx, cfg, pos, os.Stdout)
}

type dlqRedriveCmd struct {
	dlqTarget
	postgresFlags
	clickhouseFlags
}

func (c *dlqRedriveCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.clickhouseFlags.apply(&cfg); err != nil {
		return err
	}
	f, err := c.filter()
	if err != nil {
		return err
	}
	return roles.DLQRedrive(ctx, cfg, c.Projection, f, c.DryRun, os.Stdout)
}

type dlqDiscardCmd struct {
	dlqTarget
}

func (c *dlqDiscardCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	f, err := c.filter()
	if err != nil {
		return err
	}
	return roles.DLQDiscard(ctx, cfg, c.Projection, f, c.DryRun, os.Stdout)
}

type ingestCmd struct {
	kafkaFlags
	postgresFlags
	httpFlags
	authFlags
	idempotencyFlags
	opsFlags
}

type processCmd struct {
	kafkaFlags
	idempotencyFlags
	processorFlags
	opsFlags
}

type projectCmd struct {
	kafkaFlags
	postgresFlags
	clickhouseFlags
	batchFlags
	opsFlags
	Store string `arg:"" enum:"clickhouse,postgres" help:"Which store to project into: clickhouse or postgres."`
}

type migrateCmd struct {
	kafkaFlags
	postgresFlags
	clickhouseFlags
	Only string `enum:"all,postgres,clickhouse" default:"all" help:"Migrate only one store."`
}

type devCmd struct {
	devOpsFlags
	kafkaFlags
	postgresFlags
	clickhouseFlags
	httpFlags
	authFlags
	batchFlags
	idempotencyFlags
	processorFlags
	DataDir    string `env:"KAPPA_DATA_DIR" default:".data" type:"path" help:"Directory of the embedded broker's log, the processor's state (state) and the development API key (dev-api-key)."`
	BrokerPort int    `env:"KAPPA_DEV_BROKER_PORT" default:"29092" help:"Port of the embedded Kafka broker (0 picks one)."`
}

func (c *ingestCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	c.httpFlags.apply(&cfg)
	c.authFlags.apply(&cfg)
	c.idempotencyFlags.apply(&cfg)
	c.opsFlags.apply(&cfg)
	return roles.Ingest(ctx, cfg)
}

func (c *processCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	c.idempotencyFlags.apply(&cfg)
	c.processorFlags.apply(&cfg)
	c.opsFlags.apply(&cfg)
	return roles.Process(ctx, cfg)
}

func (c *projectCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	c.batchFlags.apply(&cfg)
	c.opsFlags.apply(&cfg)
	if c.Store == "postgres" {
		if err := c.postgresFlags.apply(&cfg); err != nil {
			return err
		}
		return roles.ProjectPostgres(ctx, cfg)
	}
	if err := c.clickhouseFlags.apply(&cfg); err != nil {
		return err
	}
	return roles.ProjectClickHouse(ctx, cfg)
}

func (c *migrateCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.clickhouseFlags.apply(&cfg); err != nil {
		return err
	}
	return roles.Migrate(ctx, cfg, c.Only != "clickhouse", c.Only != "postgres")
}

func (c *devCmd) Run(ctx context.Context, cfg roles.Config) error {
	if err := c.kafkaFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.postgresFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.clickhouseFlags.apply(&cfg); err != nil {
		return err
	}
	c.httpFlags.apply(&cfg)
	c.batchFlags.apply(&cfg)
	c.idempotencyFlags.apply(&cfg)
	c.processorFlags.apply(&cfg)
	if cfg.Processor.StateDir == "" {
		cfg.Processor.StateDir = filepath.Join(c.DataDir, "state")
		if cfg.Processor.TransactionalID == "" && cfg.Processor.InstanceID == "" {
			// The store lives in a directory named after it: one that
			// changed with every start (host and pid) would leave a
			// store behind each time instead of finding the last one.
			cfg.Processor.TransactionalID = cfg.GroupPrefix + "-processor-dev"
		}
	}
	c.devOpsFlags.apply(&cfg)
	c.authFlags.apply(&cfg)
	return roles.Dev(ctx, cfg, filepath.Join(c.DataDir, "kafka"), c.BrokerPort, filepath.Join(c.DataDir, filepath.Base(devAPIKeyFile)))
}

func main() {
	var flags cli
	kctx := kong.Parse(&flags,
		componentDefaults(),
		kong.Name("kappa"),
		kong.Description("CQRS with event sourcing on Kafka, projected into ClickHouse and Postgres."),
		kong.UsageOnError(),
	)
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: flags.LogLevel})
	if flags.LogFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: flags.LogLevel})
	}
	logger := slog.New(handler)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(roles.Config{Logger: logger})
	if err := kctx.Run(); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("kappa "+kctx.Command(), "err", err)
		fmt.Fprintln(os.Stderr, "kappa:", err)
		os.Exit(1)
	}
}
