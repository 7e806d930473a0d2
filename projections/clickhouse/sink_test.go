package clickhouse_test

import (
	"fmt"
	"testing"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projectiontest"
	"github.com/kappa-cqrs/kappa/schemas"
)

func TestSinkConformance(t *testing.T) {
	projectiontest.Run(t, func(t *testing.T) projectiontest.Harness[*clickhouse.Store] {
		cfg := kappatest.ClickHouse(t)
		return projectiontest.Harness[*clickhouse.Store]{
			Open:     func(t *testing.T) *clickhouse.Store { return open(t, cfg) },
			Contents: contents,
			Want:     want,
			// Nothing the projection inserts is refused by the server: the
			// native protocol sends typed columns.
			Refused: nil,
			Crashes: map[string]func(*testing.T, *clickhouse.Store, []schemas.Record){
				"typed tables written, events table not": func(t *testing.T, s *clickhouse.Store, batch []schemas.Record) {
					if err := s.ApplyTypedOnly(t.Context(), batch); err != nil {
						t.Fatal(err)
					}
				},
			},
			ResumeAtLastEvent: true,
		}
	})
}

// contentQueries read every table as one key per row, counted, and the
// materialized views' sums per group, never FINAL: a duplicate must show.
var contentQueries = []struct {
	query string
	sums  []string // names of the sums after the key; none: count() of rows
}{
	{query: "SELECT concat('events ', event_id, ' ', event_type, ' ', aggregate_id, ' v', toString(aggregate_version), " +
		"' at ', toString(`partition`), ':', toString(`offset`)) AS k, toInt64(count()) FROM %s.events GROUP BY k"},
	{query: "SELECT concat('cart_lines ', event_id, ' ', cart_id, ' ', product_id, ' ', toString(quantity_delta), '@', toString(unit_price_cents), " +
		"' v', toString(cart_version), ' at ', toString(`partition`), ':', toString(`offset`)) AS k, toInt64(count()) FROM %s.cart_lines GROUP BY k"},
	{query: "SELECT concat('orders ', event_id, ' ', order_id, ' cart ', cart_id, ' customer ', customer_id, ' total ', toString(total_cents), " +
		"' lines ', toString(line_count), ' items ', toString(item_count), ' at ', toString(`partition`), ':', toString(`offset`)) AS k, " +
		"toInt64(count()) FROM %s.orders GROUP BY k"},
	{query: "SELECT concat('order_lines ', event_id, ' ', order_id, ' ', customer_id, ' ', product_id, ' ', toString(quantity), 'x', " +
		"toString(unit_price_cents), '=', toString(revenue_cents), ' at ', toString(`partition`), ':', toString(`offset`)) AS k, " +
		"toInt64(count()) FROM %s.order_lines GROUP BY k"},
	{query: "SELECT concat('articles ', event_id, ' ', event_type, ' ', article_id, ' author ', if(author_id = '', '-', author_id), " +
		"' title ', ifNull(title, '-'), ' tags [', arrayStringConcat(tags, ' '), '] changed ', toString(tags_changed), " +
		"' v', toString(article_version), ' at ', toString(`partition`), ':', toString(`offset`)) AS k, toInt64(count()) FROM %s.articles GROUP BY k"},
	{query: "SELECT concat('revenue_per_product_hour ', product_id, ' ', toString(hour)) AS k, " +
		"toInt64(sum(units)), toInt64(sum(revenue_cents)), toInt64(sum(order_lines)) FROM %s.revenue_per_product_hour GROUP BY k",
		sums: []string{"units", "revenue_cents", "order_lines"}},
	{query: "SELECT concat('articles_per_author_day ', author_id, ' ', toString(day)) AS k, toInt64(sum(published)) " +
		"FROM %s.articles_per_author_day GROUP BY k",
		sums: []string{"published"}},
}

func contents(t *testing.T, s *clickhouse.Store) projectiontest.Contents {
	t.Helper()
	got := projectiontest.Contents{}
	for _, q := range contentQueries {
		query := fmt.Sprintf(q.query, s.Database())
		rows, err := s.Conn().Query(t.Context(), query)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		for rows.Next() {
			var key string
			values := make([]int64, max(len(q.sums), 1))
			dest := []any{&key}
			for i := range values {
				dest = append(dest, &values[i])
			}
			if err := rows.Scan(dest...); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			if len(q.sums) == 0 {
				got[key] += values[0]
			}
			for i, name := range q.sums {
				got[key+" "+name] += values[i]
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		_ = rows.Close()
	}
	return got
}

// want is what the store holds after projectiontest.Stream: every event in
// the events table, the typed rows of each, and the views' sums.
var want = projectiontest.Contents{
	"events cmd-0-0-event-0 cart.product_added c1 v1 at 0:0":    1,
	"events cmd-0-1-event-0 cart.product_added c1 v2 at 0:3":    1,
	"events cmd-0-2-event-0 cart.product_removed c1 v3 at 0:6":  1,
	"events cmd-0-3-event-0 cart.checked_out c1 v4 at 0:9":      1,
	"events cmd-1-0-event-0 article.published a1 v1 at 1:0":     1,
	"events cmd-1-1-event-0 cart.product_added c3 v1 at 1:3":    1,
	"events cmd-1-1-event-1 cart.product_added c3 v2 at 1:4":    1,
	"events cmd-1-2-event-0 article.updated a1 v2 at 1:7":       1,
	"events cmd-1-3-event-0 cart.product_removed c3 v3 at 1:10": 1,
	"events cmd-2-0-event-0 cart.product_added c2 v1 at 2:0":    1,
	"events cmd-2-0-event-1 cart.checked_out c2 v2 at 2:1":      1,
	"events cmd-2-1-event-0 article.published a2 v1 at 2:4":     1,
	"events cmd-2-2-event-0 article.updated a2 v2 at 2:7":       1,

	"cart_lines cmd-0-0-event-0 c1 p1 2@100 v1 at 0:0": 1,
	"cart_lines cmd-0-1-event-0 c1 p2 1@250 v2 at 0:3": 1,
	"cart_lines cmd-0-2-event-0 c1 p1 -1@0 v3 at 0:6":  1,
	"cart_lines cmd-1-1-event-0 c3 p3 5@999 v1 at 1:3": 1,
	"cart_lines cmd-1-1-event-1 c3 p3 1@999 v2 at 1:4": 1,
	"cart_lines cmd-1-3-event-0 c3 p3 -6@0 v3 at 1:10": 1,
	"cart_lines cmd-2-0-event-0 c2 p1 3@100 v1 at 2:0": 1,

	"orders cmd-0-3-event-0 c1 cart c1 customer u9 total 350 lines 2 items 2 at 0:9": 1,
	"orders cmd-2-0-event-1 c2 cart c2 customer u8 total 300 lines 1 items 3 at 2:1": 1,

	"order_lines cmd-0-3-event-0 c1 u9 p1 1x100=100 at 0:9": 1,
	"order_lines cmd-0-3-event-0 c1 u9 p2 1x250=250 at 0:9": 1,
	"order_lines cmd-2-0-event-1 c2 u8 p1 3x100=300 at 2:1": 1,

	"articles cmd-1-0-event-0 article.published a1 author u1 title First tags [go] changed 1 v1 at 1:0":     1,
	"articles cmd-1-2-event-0 article.updated a1 author - title Second tags [go kafka] changed 1 v2 at 1:7": 1,
	"articles cmd-2-1-event-0 article.published a2 author u1 title Other tags [] changed 1 v1 at 2:4":       1,
	"articles cmd-2-2-event-0 article.updated a2 author - title - tags [] changed 0 v2 at 2:7":              1,

	"revenue_per_product_hour p1 2026-11-22 10:00:00 units":         4,
	"revenue_per_product_hour p1 2026-11-22 10:00:00 revenue_cents": 400,
	"revenue_per_product_hour p1 2026-11-22 10:00:00 order_lines":   2,
	"revenue_per_product_hour p2 2026-11-22 10:00:00 units":         1,
	"revenue_per_product_hour p2 2026-11-22 10:00:00 revenue_cents": 250,
	"revenue_per_product_hour p2 2026-11-22 10:00:00 order_lines":   1,
	"articles_per_author_day u1 2026-11-22 published":               2,
}

func open(t *testing.T, cfg clickhouse.Config) *clickhouse.Store {
	t.Helper()
	s, err := clickhouse.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	cfg := kappatest.ClickHouse(t)
	open(t, cfg)
	s := open(t, cfg)
	var applied uint64
	if err := s.Conn().QueryRow(t.Context(), "SELECT count() FROM "+cfg.Database+".schema_migrations").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	migrations, err := clickhouse.RenderMigrations(clickhouse.ParamsFor(cfg.Database, 18))
	if err != nil {
		t.Fatal(err)
	}
	if applied != uint64(len(migrations)) {
		t.Fatalf("schema_migrations has %d rows after migrating twice, want one per migration (%d)", applied, len(migrations))
	}
}
