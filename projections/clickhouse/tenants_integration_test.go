package clickhouse_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
)

// A database an earlier Kappa wrote, without tenants, comes out of
// migration 0003 with every table led by the tenant, its rows the default
// tenant's, its views feeding the new tables, and no gate of the old shape.
func TestMigrationToTenantsKeepsEarlierRowsAsTheDefaultTenants(t *testing.T) {
	cfg := kappatest.ClickHouse(t)
	ctx := t.Context()
	s, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.MigrateTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	db := cfg.Database
	placed := time.Date(2026, 11, 22, 10, 15, 0, 0, time.UTC)
	insert := func(query string, values ...any) {
		t.Helper()
		b, err := s.Conn().PrepareBatch(ctx, "INSERT INTO "+db+"."+query)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(values...); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	insert("order_lines (event_id, order_id, customer_id, product_id, quantity, unit_price_cents, revenue_cents, placed_at, `partition`, `offset`)",
		"e1", "o1", "c1", "p1", int64(2), int64(150), int64(300), placed, int32(0), int64(7))
	insert("events (event_id, event_type, schema_version, aggregate_id, aggregate_version, command_id, tenant, source, occurred_at, payload, topic, `partition`, `offset`)",
		"e1", "cart.checked_out", uint16(1), "o1", uint64(2), "cmd-1", "", "kappa/processor", placed, "{}", "kappa.events", int32(0), int64(7))
	for _, stmt := range clickhouse.CreateGates(db, "old") {
		if err := s.Conn().Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	rows, err := s.Conn().Query(ctx, "SELECT name, sorting_key FROM system.tables WHERE database = ?", db)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name, key string
		if err := rows.Scan(&name, &key); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(name, "writer_old_"):
			t.Errorf("gate %s of the old shape is still there", name)
		case strings.HasSuffix(name, "_tenants"):
			t.Errorf("table %s of the migration is left behind", name)
		case key != "" && name != "projection_topics" && name != "schema_migrations" && !strings.HasPrefix(key, "tenant,"):
			t.Errorf("table %s is sorted by %q, not by the tenant first", name, key)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var tenant, order string
	if err := s.Conn().QueryRow(ctx, "SELECT tenant, order_id FROM "+db+".order_lines").Scan(&tenant, &order); err != nil {
		t.Fatal(err)
	}
	if tenant != "default" || order != "o1" {
		t.Errorf("the earlier order line is (%q, %q), want (default, o1)", tenant, order)
	}
	if err := s.Conn().QueryRow(ctx, "SELECT tenant FROM "+db+".events").Scan(&tenant); err != nil || tenant != "default" {
		t.Errorf("the earlier event's tenant is %q (%v), want default", tenant, err)
	}

	// The view feeds the new table, tenant by tenant, and the earlier sums stay.
	insert("order_lines (tenant, event_id, order_id, customer_id, product_id, quantity, unit_price_cents, revenue_cents, placed_at, `partition`, `offset`)",
		"acme", "e2", "o1", "c1", "p1", int64(1), int64(150), int64(150), placed, int32(0), int64(8))
	got := map[string]int64{}
	rows, err = s.Conn().Query(ctx, "SELECT tenant, toInt64(sum(revenue_cents)) FROM "+db+".revenue_per_product_hour WHERE product_id = 'p1' GROUP BY tenant")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var revenue int64
		if err := rows.Scan(&tenant, &revenue); err != nil {
			t.Fatal(err)
		}
		got[tenant] = revenue
	}
	if got["default"] != 300 || got["acme"] != 150 || len(got) != 2 {
		t.Errorf("revenue of p1 by tenant = %v, want default 300 and acme 150", got)
	}

	// And a second start finds nothing to do.
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
}
