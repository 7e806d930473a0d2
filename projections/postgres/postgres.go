// Package postgres projects events into Postgres read models for point
// lookups: articles, carts with their items, orders and command outcomes.
// A batch is applied in one transaction together with the positions it
// covers, and a restart resumes from those positions, so every event is
// reflected exactly once. The same package serves the lookups.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/kappa-cqrs/kappa/schemas"
	"github.com/kappa-cqrs/kappa/secret"
)

// Config configures the Postgres store. Zero values take the documented defaults.
type Config struct {
	// URL is a libpq connection string or URL. Required. For TLS with a
	// checked server certificate, sslmode=verify-full&sslrootcert=<CA file>.
	URL string
	// Password, if set, replaces the URL's, so that the URL need not
	// carry the secret. Default: the URL's.
	Password secret.Value
	// Schema holds Kappa's tables; it is created if missing. Default "kappa".
	Schema string
	// MaxConns caps the connection pool. Default 8.
	MaxConns int32
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = "kappa"
	}
	if c.MaxConns == 0 {
		c.MaxConns = 8
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("postgres: URL is required"))
	}
	if !identifier.MatchString(c.Schema) {
		errs = append(errs, fmt.Errorf("postgres: Schema %q must be a lower-case SQL identifier", c.Schema))
	}
	if c.MaxConns < 1 {
		errs = append(errs, errors.New("postgres: MaxConns must be positive"))
	}
	return errors.Join(errs...)
}

// plannerSettings are session settings for the store's connections, unless
// the URL sets them. The projection's statements take whole batches as
// arrays and touch a few hundred rows of tables that keep growing.
var plannerSettings = map[string]string{
	// pgx prepares statements, and Postgres switched the cart lock to a
	// generic plan costed for the empty table it first met: a sequential
	// scan testing every row against every id of the batch (id = ANY($1)
	// is hashed only for a known array), a second per batch once the
	// table had grown. Plan each execution with its actual arrays.
	"plan_cache_mode": "force_custom_plan",
	// With the default 4, joining a batch of 200 ids to carts by key was
	// planned as a hash join over a sequential scan of the whole table, a
	// cost that grows with the table; the tables a projection writes are
	// read from memory, where random reads cost about as much as
	// sequential ones.
	"random_page_cost": "1.1",
}

// Store is a connection pool to Kappa's Postgres schema.
type Store struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
}

// Open connects to Postgres with search_path set to the configured schema.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	if !cfg.Password.IsZero() {
		pc.ConnConfig.Password = cfg.Password.Reveal()
	}
	pc.ConnConfig.RuntimeParams["search_path"] = cfg.Schema
	for name, value := range plannerSettings {
		if _, set := pc.ConnConfig.RuntimeParams[name]; !set {
			pc.ConnConfig.RuntimeParams[name] = value
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return &Store{cfg: cfg, pool: pool, log: cfg.Logger.With("projection", "postgres")}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Migrate creates the schema and applies the embedded migrations that are
// not applied yet. Concurrent callers serialise on an advisory lock.
func (s *Store) Migrate(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{s.cfg.Schema}.Sanitize()); err != nil {
		return fmt.Errorf("create schema %s: %w", s.cfg.Schema, err)
	}
	migrations, err := fs.Sub(schemas.DDL, "ddl/postgres")
	if err != nil {
		return err
	}
	// One lock per schema: goose's default id is one for the whole
	// database, and a migration that finds it taken waits seconds before
	// it tries again, even for another schema.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(schemaLockID(s.cfg.Schema)))
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("load postgres migrations: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply postgres migrations: %w", err)
	}
	for _, r := range results {
		s.log.Info("applied migration", "store", "postgres", "migration", r.Source.Path, "took", r.Duration)
	}
	return nil
}

// DefaultFlushInterval is how long the projector collects a batch for
// Postgres unless told otherwise (projector.Pacer): its set-based writes
// are cheap, so freshness wins.
func (*Store) DefaultFlushInterval() time.Duration { return 50 * time.Millisecond }

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

// schemaLockID is the advisory lock of a schema's migrations.
func schemaLockID(schema string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("kappa migrations " + schema))
	return int64(h.Sum64() >> 1)
}
