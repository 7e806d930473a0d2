// Package roles wires Kappa's components into the roles the kappa binary
// runs: ingest (HTTP API), process (command processors), project clickhouse,
// project postgres, migrate, and all of them at once. cmd/kappa maps flags
// and environment onto Config; tests start roles in-process from here.
package roles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/heapfloor"
	"github.com/kappa-cqrs/kappa/httpserver"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/metrics"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projector"
)

// Config is everything a role may need: the settings every role shares,
// and each component's own Config as it is. The roles fill in what follows
// from the shared settings (the Kafka connection, topic and group names,
// observers, loggers); every other zero value takes the component's own
// default, which lives in its setDefaults only. Validate checks it all.
type Config struct {
	// Kafka is how every role reaches Kafka; every client of every role is
	// made from it.
	Kafka kafka.Connection
	// TopicPrefix names the topics: <prefix>.commands, .events and
	// .events.dlq. Default "kappa".
	TopicPrefix string
	// CreateTopics says how Kappa creates its topics when they are missing.
	CreateTopics kafka.TopicConfig
	// GroupPrefix names the consumer groups: <prefix>-processor,
	// <prefix>-clickhouse, <prefix>-postgres. Default "kappa".
	GroupPrefix string

	Processor           processor.Config
	ClickHouseProjector projector.Config
	PostgresProjector   projector.Config
	Publisher           ingest.Config
	Intake              ingest.IntakeConfig
	API                 api.Config
	HTTP                httpserver.Config
	Auth                AuthConfig
	Postgres            postgres.Config
	ClickHouse          clickhouse.Config

	// HTTPAddr is where ingest listens. Default ":8080".
	HTTPAddr string
	// OpsAddr is where a role serves /healthz, /readyz and /metrics for
	// operators; empty serves nothing. An address without a host binds to
	// loopback (":9090" is 127.0.0.1:9090).
	OpsAddr string
	// Pprof serves /debug/pprof on OpsAddr. Default off.
	Pprof bool
	// Registry receives every role's metrics. Default: a new registry per
	// role, served by that role.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// OnListen, if set, receives ingest's listening address (tests use
	// port 0).
	OnListen func(net.Addr)

	// shared, set by All, takes the roles' readiness checks for the one
	// ops address of the process.
	shared *readiness
}

func (c *Config) setDefaults() {
	if c.TopicPrefix == "" {
		c.TopicPrefix = "kappa"
	}
	if c.GroupPrefix == "" {
		c.GroupPrefix = "kappa"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":8080"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Postgres.Logger = c.Logger
	c.ClickHouse.Logger = c.Logger
	c.API.Logger = c.Logger
}

// Topics returns the topic names of this configuration.
func (c Config) Topics() kafka.Topics {
	c.setDefaults()
	return kafka.TopicsFor(c.TopicPrefix)
}

// EnsureTopics creates Kappa's topics if they are missing, waiting for the
// broker while it cannot be reached.
func EnsureTopics(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	cl, err := cfg.Kafka.NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	var n int32
	err = untilReachable(ctx, cfg.Logger, "create topics", func(ctx context.Context) (err error) {
		n, err = kafka.EnsureTopics(ctx, cl, cfg.Topics(), cfg.CreateTopics)
		return err
	})
	if err != nil {
		return err
	}
	cfg.Logger.Info("topics ready", "prefix", cfg.TopicPrefix, "partitions", n)
	return nil
}

// Migrate creates the topics and applies the migrations of the stores asked for.
func Migrate(ctx context.Context, cfg Config, pg, ch bool) error {
	cfg.setDefaults()
	if err := errors.Join(cfg.Kafka.Validate(), cfg.ValidateStores(pg, ch)); err != nil {
		return err
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		return err
	}
	if pg {
		store, err := postgres.Open(ctx, cfg.Postgres)
		if err != nil {
			return err
		}
		defer store.Close()
		if err := untilReachable(ctx, cfg.Logger, "migrate postgres", store.Migrate); err != nil {
			return err
		}
	}
	if ch {
		store, err := clickhouse.Open(ctx, cfg.ClickHouse)
		if err != nil {
			return err
		}
		defer store.Close()
		if err := untilReachable(ctx, cfg.Logger, "migrate clickhouse", store.Migrate); err != nil {
			return err
		}
	}
	return nil
}

// Ingest serves the HTTP API until ctx ends, then drains requests.
func Ingest(ctx context.Context, cfg Config) error {
	return quietOnCancel(ctx, runIngest(ctx, cfg))
}

func runIngest(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := errors.Join(cfg.Validate(), cfg.Auth.validate()); err != nil {
		return err
	}
	if err := cfg.ValidateStores(true, false); err != nil {
		return err
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		return err
	}
	names := cfg.Topics()
	pub, err := ingest.New(cfg.publisher())
	if err != nil {
		return err
	}
	defer pub.Close()
	reads, err := postgres.Open(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer reads.Close()
	if err := untilReachable(ctx, cfg.Logger, "migrate postgres", reads.Migrate); err != nil {
		return err
	}
	pgReads := postgresReads{store: reads, positions: reads.WatchPositions(names.Events, positionPoll, cfg.Logger)}
	intake, err := ingest.NewIntake(cfg.intake(pub, reads, pgReads))
	if err != nil {
		return err
	}
	authn, err := cfg.authenticator(ctx, reads)
	if err != nil {
		return err
	}
	reg := cfg.registry()
	apiCfg := cfg.API
	apiCfg.Refusals = metrics.NewRefusals(reg)
	apiHandler, err := api.New(apiCfg, intake, pgReads, authn)
	if err != nil {
		return err
	}
	handler := metrics.HTTP(reg, apiHandler)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	httpCfg := cfg.HTTP
	httpCfg.Logger = cfg.Logger
	srv, err := httpserver.New(httpCfg, handler)
	if err != nil {
		_ = ln.Close()
		return err
	}
	cfg.Logger.Info("ingest listening", "addr", ln.Addr().String(), "https", httpCfg.TLS(), "client_certificates", httpCfg.ClientCAFile != "")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pub.RunOutcomes(gctx) })
	g.Go(func() error { return serveOps(gctx, cfg, "ingest", reg, intake.Ready) })
	g.Go(func() error {
		return purgeIdempotencyKeys(gctx, reads, cfg.Intake.WithDefaults().IdempotencyWindow, cfg.Logger)
	})
	g.Go(func() error { return srv.Serve(gctx, ln, 10*time.Second) })
	return g.Wait()
}

// Process runs a command processor until ctx ends.
func Process(ctx context.Context, cfg Config) error {
	return quietOnCancel(ctx, runProcess(ctx, cfg))
}

func runProcess(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		return err
	}
	reg := cfg.registry()
	p, err := processor.New(cfg.processor(metrics.NewProcessor(reg)))
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error {
		heapfloor.Keep(gctx, cfg.processor(nil).WithDefaults().HeapFloor, time.Second)
		return nil
	})
	g.Go(func() error {
		return serveOps(gctx, cfg, "processor", reg, func(context.Context) error { return p.Ready() })
	})
	return g.Wait()
}

// Names of the projections, in logs, metrics and readiness.
const (
	postgresName   = "postgres"
	clickhouseName = "clickhouse"
)

// ProjectPostgres runs the Postgres projection until ctx ends.
func ProjectPostgres(ctx context.Context, cfg Config) error {
	return quietOnCancel(ctx, runProjectPostgres(ctx, cfg))
}

func runProjectPostgres(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.ValidateStores(true, false); err != nil {
		return err
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		return err
	}
	store, err := postgres.Open(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := untilReachable(ctx, cfg.Logger, "migrate postgres", store.Migrate); err != nil {
		return err
	}
	return project(ctx, cfg, postgresName, store)
}

// ProjectClickHouse runs the ClickHouse projection until ctx ends.
func ProjectClickHouse(ctx context.Context, cfg Config) error {
	return quietOnCancel(ctx, runProjectClickHouse(ctx, cfg))
}

func runProjectClickHouse(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.ValidateStores(false, true); err != nil {
		return err
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		return err
	}
	store, err := clickhouse.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := untilReachable(ctx, cfg.Logger, "migrate clickhouse", store.Migrate); err != nil {
		return err
	}
	return project(ctx, cfg, clickhouseName, store)
}

// pinger is what readiness asks of a sink.
type pinger interface {
	Ping(ctx context.Context) error
}

func project(ctx context.Context, cfg Config, name string, sink interface {
	projector.Sink
	pinger
}) error {
	reg := cfg.registry()
	c, err := projector.New(cfg.projector(name, metrics.NewProjection(reg, name)), sink)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(gctx) })
	g.Go(func() error {
		return serveOps(gctx, cfg, "projection "+name, reg, func(ctx context.Context) error {
			if err := c.Ready(); err != nil {
				return err
			}
			return sink.Ping(ctx)
		})
	})
	return g.Wait()
}

// quietOnCancel turns an error caused by shutdown, at any point of a role's
// start, into a clean exit.
func quietOnCancel(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return nil //nolint:nilerr // shutting down is not a failure
	}
	return err
}

// purgeIdempotencyKeys deletes expired keys every few minutes. Expired keys
// are already ignored; this only bounds the table.
func purgeIdempotencyKeys(ctx context.Context, store *postgres.Store, window time.Duration, log *slog.Logger) error {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := store.PurgeIdempotencyKeys(ctx, window); err != nil {
				log.Warn("purge idempotency keys", "err", err)
			} else if n > 0 {
				log.Info("purged idempotency keys", "keys", n)
			}
		}
	}
}
