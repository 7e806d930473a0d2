// Package clickhouse projects events into ClickHouse for analytical SQL: a
// generic events table holding every event, typed fact tables for cart
// lines, orders, order lines and articles, and materialized-view aggregates.
//
// ClickHouse has no transactions across tables, so exactly-once comes from
// the data itself. Each row records the Kafka partition and offset of its
// event. A batch is inserted into the typed tables first and into the events
// table last; the projection resumes after max(offset) of the events table,
// and skips rows that a typed table already holds up to its own max(offset).
// A crash between inserts therefore neither loses nor duplicates a row.
//
// This needs one writer per partition. The consumer group gives that only
// to members that know they are members: one stopped past its session
// timeout comes back believing it still owns its partitions. Writes go
// through gates per member that a new owner drops before it resumes, so a
// stale member's writes either land before the new owner reads where to
// resume or fail (fence.go).
package clickhouse

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/kappa-cqrs/kappa/schemas"
	"github.com/kappa-cqrs/kappa/secret"
	"github.com/kappa-cqrs/kappa/tlsconfig"
)

// Config configures the ClickHouse store. Zero values take the documented defaults.
type Config struct {
	// Addr lists host:port of ClickHouse's native protocol. Required.
	Addr []string
	// Database holds Kappa's tables; it is created if missing. Default "kappa".
	Database string
	// Username and Password authenticate. Default user "default", no password.
	Username string
	Password secret.Value
	// TLS, if set, connects over TLS (ClickHouse's secure native port,
	// 9440 by default) and checks the server's certificate. Default none.
	TLS *tlsconfig.Client
	// DialTimeout bounds connecting. Default 5s.
	DialTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Database == "" {
		c.Database = "kappa"
	}
	if c.Username == "" {
		c.Username = "default"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

var identifier = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,62}$`)

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Addr) == 0 {
		errs = append(errs, errors.New("clickhouse: Addr is required"))
	}
	if !identifier.MatchString(c.Database) {
		errs = append(errs, fmt.Errorf("clickhouse: Database %q must be an identifier", c.Database))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, errors.New("clickhouse: DialTimeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Store is a connection to Kappa's ClickHouse database. It implements the
// projection runtime's Sink (package projector).
type Store struct {
	cfg  Config
	conn driver.Conn
	log  *slog.Logger

	mu sync.Mutex
	// held[table][partition] is the highest offset the table holds; rows up
	// to it are never inserted again. known marks the partitions whose
	// entries were read from ClickHouse and not invalidated by a failure.
	held  map[string]map[int32]int64
	known map[int32]bool
	// writer names this store's gates once Fence has made it a group
	// member's writer (see fence.go); empty, it writes to the tables.
	writer string
}

// Open connects over the native protocol. The database need not exist yet.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var tc *tls.Config
	if cfg.TLS != nil {
		var err error
		if tc, err = cfg.TLS.Config(); err != nil {
			return nil, fmt.Errorf("clickhouse: %w", err)
		}
	}
	conn, err := ch.Open(&ch.Options{
		Addr:        cfg.Addr,
		TLS:         tc,
		Auth:        ch.Auth{Database: "default", Username: cfg.Username, Password: cfg.Password.Reveal()},
		DialTimeout: cfg.DialTimeout,
		Protocol:    ch.Native,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to clickhouse: %w", err)
	}
	return &Store{cfg: cfg, conn: conn, log: cfg.Logger.With("projection", "clickhouse"), held: map[string]map[int32]int64{}, known: map[int32]bool{}}, nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.conn.Close() }

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Database returns the database name.
func (s *Store) Database() string { return s.cfg.Database }

// Conn exposes the connection for queries in tests and tools.
func (s *Store) Conn() driver.Conn { return s.conn }

// ServerVersion returns the server's major and minor version.
func (s *Store) ServerVersion(ctx context.Context) (major, minor int, err error) {
	v, err := s.conn.ServerVersion()
	if err != nil {
		return 0, 0, fmt.Errorf("read clickhouse server version: %w", err)
	}
	return int(v.Version.Major), int(v.Version.Minor), nil
}

// ddlParams are the template parameters of the ClickHouse DDL.
type ddlParams struct {
	DB     string
	Modern bool
	Symbol string // type of low-cardinality strings
	Time   string // type of event timestamps
}

// ParamsFor chooses column types by server version: 20.1 brought
// DateTime64, and LowCardinality is stable from then on.
func ParamsFor(db string, major int) ddlParams {
	p := ddlParams{DB: db, Modern: major >= 20, Symbol: "String", Time: "DateTime('UTC')"}
	if p.Modern {
		p.Symbol = "LowCardinality(String)"
		p.Time = "DateTime64(3, 'UTC')"
	}
	return p
}

// Migration is one rendered ClickHouse migration.
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

// RenderMigrations renders the embedded DDL for the given parameters.
func RenderMigrations(p ddlParams) ([]Migration, error) {
	files, err := fs.Glob(schemas.DDL, "ddl/clickhouse/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var out []Migration
	for _, f := range files {
		name := f[strings.LastIndex(f, "/")+1:]
		version, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number", name)
		}
		src, err := fs.ReadFile(schemas.DDL, f)
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(name).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("parse migration %s: %w", name, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, p); err != nil {
			return nil, fmt.Errorf("render migration %s: %w", name, err)
		}
		m := Migration{Version: version, Name: name}
		for _, stmt := range regexp.MustCompile(`(?m)^;\s*$`).Split(buf.String(), -1) {
			if s := stripComments(stmt); s != "" {
				m.Statements = append(m.Statements, s)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

func stripComments(stmt string) string {
	var lines []string
	for _, l := range strings.Split(stmt, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// staleMigrationLock is how old a migration lock may be before it is taken
// for one its holder left behind: long enough for migration 0003 to copy
// large tables.
const staleMigrationLock = 10 * time.Minute

// Migrate creates the database and applies the migrations it has not applied
// yet, recording each in schema_migrations, under the database's migration
// lock. Every statement is idempotent
// (IF NOT EXISTS), so a migration interrupted before it was recorded is
// simply applied again. goose is not used here: its ClickHouse dialect
// records versions with INSERT ... VALUES through database/sql, which hangs
// against ClickHouse 18.16.
func (s *Store) Migrate(ctx context.Context) error {
	return s.migrate(ctx, math.MaxInt)
}

// migrate applies the migrations up to version last.
func (s *Store) migrate(ctx context.Context, last int) error {
	major, _, err := s.ServerVersion(ctx)
	if err != nil {
		return err
	}
	db := s.cfg.Database
	for _, stmt := range []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		"CREATE TABLE IF NOT EXISTS " + db + ".schema_migrations (version UInt32, name String, applied_at DateTime('UTC')) ENGINE = MergeTree() ORDER BY version",
	} {
		if err := s.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("prepare clickhouse migrations: %w", err)
		}
	}
	migrations, err := RenderMigrations(ParamsFor(db, major))
	if err != nil {
		return err
	}
	pending := func(applied map[int]bool) bool {
		return slices.ContainsFunc(migrations, func(m Migration) bool { return !applied[m.Version] && m.Version <= last })
	}
	applied, err := s.appliedMigrations(ctx)
	if err != nil || !pending(applied) {
		return err
	}
	// Roles start together, and a migration that copies tables must run
	// once at a time. The lock is taken only when there is work, so a
	// process killed during an ordinary start leaves none behind.
	unlock, err := s.lock(ctx, "migration_lock", staleMigrationLock)
	if err != nil {
		return err
	}
	defer unlock()
	if applied, err = s.appliedMigrations(ctx); err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.Version] || m.Version > last {
			continue
		}
		steps := m.Statements
		if m.Version == tenantsVersion {
			have, err := s.tables(ctx)
			if err != nil {
				return err
			}
			if steps, err = TenantSteps(db, major, m, have); err != nil {
				return err
			}
		}
		for _, stmt := range steps {
			if err := s.conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("clickhouse migration %s: %w", m.Name, err)
			}
		}
		b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
		if err != nil {
			return err
		}
		if err := b.Append(uint32(m.Version), m.Name, time.Now().UTC()); err != nil {
			return err
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("record clickhouse migration %s: %w", m.Name, err)
		}
		s.log.Info("applied migration", "store", "clickhouse", "migration", m.Name, "server_major", major)
	}
	return nil
}

// appliedMigrations returns the versions schema_migrations records.
func (s *Store) appliedMigrations(ctx context.Context) (map[int]bool, error) {
	applied := map[int]bool{}
	rows, err := s.conn.Query(ctx, "SELECT version FROM "+s.cfg.Database+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read applied clickhouse migrations: %w", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[int(v)] = true
	}
	return applied, rows.Err()
}

// DefaultFlushInterval is how long the projector collects a batch for
// ClickHouse unless told otherwise (projector.Pacer): every insert makes
// parts to merge, so it wants few, large ones.
func (*Store) DefaultFlushInterval() time.Duration { return 200 * time.Millisecond }

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
