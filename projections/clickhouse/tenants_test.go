package clickhouse

import (
	"slices"
	"strings"
	"testing"
)

// earlierDatabase returns the statements of the migrations before 0003,
// migration 0003, and the tables a database holds before it.
func earlierDatabase(t *testing.T, db string, major int) (before []string, m Migration, have map[string]TableState) {
	t.Helper()
	migrations, err := RenderMigrations(ParamsFor(db, major))
	if err != nil {
		t.Fatal(err)
	}
	have = map[string]TableState{}
	for _, mig := range migrations {
		if mig.Version >= tenantsVersion {
			if mig.Version > tenantsVersion {
				t.Fatalf("migration %s comes after 0003; the upgrade tests must run it too", mig.Name)
			}
			m = mig
			continue
		}
		before = append(before, mig.Statements...)
		for table, cols := range createTables(t, []Migration{mig}) {
			var names []string
			for name := range cols {
				names = append(names, name)
			}
			have[table] = TableState{Columns: names}
		}
	}
	if m.Version != tenantsVersion {
		t.Fatal("no migration 0003")
	}
	return before, m, have
}

func TestTenantStepsCopyEveryTableAndSwapIt(t *testing.T) {
	_, m, have := earlierDatabase(t, "kappa", 18)
	have["writer_abc_events"] = TableState{Columns: have["events"].Columns}
	steps, err := TenantSteps("kappa", 18, m, have)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(steps, "\n")
	// The views go first and come back last, over the swapped tables.
	if !strings.HasPrefix(steps[0], "DROP TABLE IF EXISTS kappa.revenue_per_product_hour_mv") ||
		!strings.HasPrefix(steps[1], "DROP TABLE IF EXISTS kappa.articles_per_author_day_mv") {
		t.Errorf("the first steps do not drop the views:\n%s", text)
	}
	lastView := slices.IndexFunc(steps, func(s string) bool { return strings.HasPrefix(s, "CREATE MATERIALIZED VIEW") })
	for i, s := range steps {
		if strings.HasPrefix(s, "RENAME") && i > lastView {
			t.Errorf("a view is created before a table is swapped:\n%s", text)
		}
	}
	for _, table := range []string{"events", "cart_lines", "orders", "order_lines", "articles", "revenue_per_product_hour", "articles_per_author_day"} {
		rename := "RENAME TABLE kappa." + table + " TO kappa." + table + "_before_tenants, kappa." + table + "_tenants TO kappa." + table
		if !slices.Contains(steps, rename) {
			t.Errorf("no step %q", rename)
		}
		if !slices.Contains(steps, "DROP TABLE IF EXISTS kappa."+table+"_before_tenants") {
			t.Errorf("the old %s is not dropped", table)
		}
	}
	if !strings.Contains(text, "SELECT 'default', `event_id`, `event_type`, `cart_id`") {
		t.Errorf("cart lines are not copied as the default tenant's:\n%s", text)
	}
	if !strings.Contains(text, "SELECT if(tenant = '', 'default', tenant), `event_id`") {
		t.Errorf("events without a tenant are not copied as the default tenant's:\n%s", text)
	}
	if steps[len(steps)-1] != "DROP TABLE IF EXISTS kappa.writer_abc_events" {
		t.Errorf("the last step is %q, not the drop of the writer's gate", steps[len(steps)-1])
	}
}

func TestTenantStepsFinishAnInterruptedMigration(t *testing.T) {
	_, m, have := earlierDatabase(t, "kappa", 18)
	// events is done; orders was renamed away before its new table took
	// its name; cart_lines was half copied.
	have["events"] = TableState{Columns: have["events"].Columns, TenantFirst: true}
	have["events_before_tenants"] = have["events"]
	have["orders_before_tenants"] = have["orders"]
	delete(have, "orders")
	have["cart_lines_tenants"] = TableState{Columns: append([]string{"tenant"}, have["cart_lines"].Columns...)}
	steps, err := TenantSteps("kappa", 18, m, have)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(steps, "\n")
	if strings.Contains(text, "INSERT INTO kappa.events_tenants") || strings.Contains(text, "CREATE TABLE IF NOT EXISTS kappa.events_tenants") {
		t.Errorf("the finished events table is built again:\n%s", text)
	}
	if !slices.Contains(steps, "DROP TABLE IF EXISTS kappa.events_before_tenants") {
		t.Errorf("the old events table is left behind:\n%s", text)
	}
	if !strings.Contains(text, "FROM kappa.orders_before_tenants") || !slices.Contains(steps, "RENAME TABLE kappa.orders_tenants TO kappa.orders") {
		t.Errorf("orders is not copied from its renamed old table:\n%s", text)
	}
	drop := slices.Index(steps, "DROP TABLE IF EXISTS kappa.cart_lines_tenants")
	create := slices.IndexFunc(steps, func(s string) bool {
		return strings.HasPrefix(s, "CREATE TABLE IF NOT EXISTS kappa.cart_lines_tenants")
	})
	if drop < 0 || create < drop {
		t.Errorf("the half-copied cart_lines_tenants is not dropped before it is built again:\n%s", text)
	}
}
