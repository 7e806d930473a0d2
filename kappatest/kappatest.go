// Package kappatest gives tests isolated resources on the real local stack
// (deploy/stack.sh): unique topic prefixes, Postgres schemas and ClickHouse
// databases, each dropped when the test ends, and a polling wait.
//
// The stack's addresses come from KAPPA_KAFKA_BROKERS, KAPPA_POSTGRES_URL
// and KAPPA_CLICKHOUSE_ADDR (`deploy/stack.sh env` prints them). Without
// them integration tests skip, unless KAPPA_INTEGRATION=require, which
// `make test` and CI set, turns the skip into a failure.
package kappatest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/secret"
	"github.com/kappa-cqrs/kappa/tlsconfig"
)

var counter atomic.Int64

// Name returns a name unique to this test run, made of lower-case letters,
// digits and underscores, usable as a topic prefix, schema or database.
func Name(t testing.TB, kind string) string {
	t.Helper()
	return fmt.Sprintf("t%s_%d_%d_%d", kind, os.Getpid(), time.Now().UnixNano()%1_000_000, counter.Add(1))
}

func env(t testing.TB, key string) string {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		if os.Getenv("KAPPA_INTEGRATION") == "require" {
			t.Fatalf("%s is not set but KAPPA_INTEGRATION=require; start the stack with `make stack`", key)
		}
		t.Skipf("%s is not set; run `make test` to start the local stack", key)
	}
	return v
}

// Brokers returns the real Kafka broker's addresses.
func Brokers(t testing.TB) []string {
	t.Helper()
	return strings.Split(env(t, "KAPPA_KAFKA_BROKERS"), ",")
}

// Kafka returns the connection to the real broker, with TLS and SASL when
// the environment names them as Kappa's flags do (KAPPA_KAFKA_TLS_CA_FILE,
// KAPPA_KAFKA_SASL_*: `deploy/stack.sh env-secure`).
func Kafka(t testing.TB) kafka.Connection {
	t.Helper()
	conn := kafka.Connection{Brokers: Brokers(t)}
	if ca := os.Getenv("KAPPA_KAFKA_TLS_CA_FILE"); ca != "" {
		conn.TLS = &kafka.TLS{CAFile: ca}
	}
	if m := os.Getenv("KAPPA_KAFKA_SASL_MECHANISM"); m != "" {
		conn.SASL = &kafka.SASL{Mechanism: m, Username: os.Getenv("KAPPA_KAFKA_SASL_USERNAME"),
			Password: secret.New(os.Getenv("KAPPA_KAFKA_SASL_PASSWORD")), TokenFile: os.Getenv("KAPPA_KAFKA_SASL_TOKEN_FILE")}
	}
	return conn
}

// Postgres returns a configuration for a fresh schema, dropped at cleanup.
func Postgres(t testing.TB) postgres.Config {
	t.Helper()
	url := env(t, "KAPPA_POSTGRES_URL")
	schema := Name(t, "pg")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := ConnectPostgres(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return postgres.Config{URL: url, Schema: schema, Password: secret.New(os.Getenv("KAPPA_POSTGRES_PASSWORD"))}
}

// ConnectPostgres connects to url with the password of
// KAPPA_POSTGRES_PASSWORD if set, as the roles do.
func ConnectPostgres(ctx context.Context, url string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if pw := os.Getenv("KAPPA_POSTGRES_PASSWORD"); pw != "" {
		pc.Password = pw
	}
	return pgx.ConnectConfig(ctx, pc)
}

// ClickHouse returns a configuration for a fresh database, dropped at cleanup.
func ClickHouse(t testing.TB) clickhouse.Config {
	t.Helper()
	cfg := clickhouse.Config{Addr: strings.Split(env(t, "KAPPA_CLICKHOUSE_ADDR"), ","), Database: Name(t, "ch"),
		Username: os.Getenv("KAPPA_CLICKHOUSE_USER"), Password: secret.New(os.Getenv("KAPPA_CLICKHOUSE_PASSWORD"))}
	if ca := os.Getenv("KAPPA_CLICKHOUSE_TLS_CA_FILE"); ca != "" {
		cfg.TLS = &tlsconfig.Client{CAFile: ca}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := clickhouse.Open(ctx, cfg)
		if err != nil {
			t.Errorf("drop database %s: %v", cfg.Database, err)
			return
		}
		defer s.Close()
		if err := s.Conn().Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.Database); err != nil {
			t.Errorf("drop database %s: %v", cfg.Database, err)
		}
	})
	return cfg
}

// Eventually calls check every interval until it returns nil, and fails the
// test with check's last error if that has not happened within timeout.
func Eventually(t testing.TB, timeout, interval time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// FreePort returns a loopback port that was free a moment ago, for a
// server whose address must be known before it starts.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr[strings.LastIndex(addr, ":")+1:]
}
