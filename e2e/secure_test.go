package e2e_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
)

// TestTheSecuredStackRefusesPlaintext runs under `make test-secure`: the
// endpoints the other tests just used over TLS refuse the same client
// without it, so the secured run proves the encryption was there.
func TestTheSecuredStackRefusesPlaintext(t *testing.T) {
	if os.Getenv("KAPPA_CLICKHOUSE_TLS_CA_FILE") == "" || !strings.Contains(os.Getenv("KAPPA_POSTGRES_URL"), "verify-full") {
		t.Skip("not the secured stack; run `make test-secure`")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	plain := strings.Replace(os.Getenv("KAPPA_POSTGRES_URL"), "sslmode=verify-full", "sslmode=disable", 1)
	if conn, err := kappatest.ConnectPostgres(ctx, plain); err == nil {
		_ = conn.Close(ctx)
		t.Error("Postgres let the secured user in without TLS")
	}
	cfg := kappatest.ClickHouse(t)
	cfg.TLS = nil
	if s, err := clickhouse.Open(ctx, cfg); err == nil {
		if err := s.Ping(ctx); err == nil {
			t.Error("ClickHouse's secure port answered a client without TLS")
		}
		_ = s.Close()
	}
	cfg = kappatest.ClickHouse(t)
	s, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ClickHouse over TLS with its password: %v", err)
	}
}
