package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projectiontest"
	"github.com/kappa-cqrs/kappa/schemas"
)

func ptr[T any](v T) *T { return &v }

func open(t *testing.T, cfg postgres.Config) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSinkConformance(t *testing.T) {
	projectiontest.Run(t, func(t *testing.T) projectiontest.Harness[*postgres.Store] {
		cfg := kappatest.Postgres(t)
		return projectiontest.Harness[*postgres.Store]{
			Open:     func(t *testing.T) *postgres.Store { return open(t, cfg) },
			Contents: contents,
			Want:     want,
			// What cart_items' CHECK constraints refused before events
			// were folded, which the fold refuses in their place.
			Refused: []any{
				schemas.CartProductAddedV1{ProductID: "p1", Quantity: 0, UnitPriceCents: 10},
				schemas.CartProductAddedV1{ProductID: "p1", Quantity: 1, UnitPriceCents: -1},
				schemas.CartProductRemovedV1{ProductID: "p1", Quantity: -2},
			},
		}
	})
}

// contentQueries read every read model as one key per row; positions are
// left to Resume. Times are those of the stream's events, to the minute.
var contentQueries = []string{
	`SELECT format('cart %s %s customer %s v%s updated %s', id, status, coalesce(customer_id, '-'), version,
		to_char(updated_at AT TIME ZONE 'UTC', 'HH24:MI')) FROM carts`,
	`SELECT format('cart_item %s %s %sx%s', cart_id, product_id, quantity, unit_price_cents) FROM cart_items`,
	`SELECT format('article %s by %s title %s body %s tags [%s] v%s published %s updated %s', id, author_id, title, body,
		array_to_string(tags, ' '), version, to_char(published_at AT TIME ZONE 'UTC', 'HH24:MI'),
		to_char(updated_at AT TIME ZONE 'UTC', 'HH24:MI')) FROM articles`,
	`SELECT format('order %s cart %s customer %s total %s lines [%s] placed %s', id, cart_id, customer_id, total_cents,
		(SELECT string_agg(format('%s %sx%s', l->>'product_id', l->>'quantity', l->>'unit_price_cents'), ', ' ORDER BY n)
			FROM jsonb_array_elements(lines) WITH ORDINALITY AS x(l, n)),
		to_char(placed_at AT TIME ZONE 'UTC', 'HH24:MI')) FROM orders`,
	`SELECT format('outcome %s %s %s %s events [%s] command %s:%s decided %s', command_id, command_type, aggregate_id, status,
		(SELECT string_agg(e->>'id', ' ' ORDER BY n) FROM jsonb_array_elements(events) WITH ORDINALITY AS x(e, n)),
		command_partition, command_offset, to_char(decided_at AT TIME ZONE 'UTC', 'HH24:MI')) FROM command_outcomes`,
}

func contents(t *testing.T, s *postgres.Store) projectiontest.Contents {
	t.Helper()
	got := projectiontest.Contents{}
	for _, q := range contentQueries {
		rows, err := s.Pool().Query(t.Context(), q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for _, k := range keys {
			got[k]++
		}
	}
	return got
}

// want is what the read models hold after projectiontest.Stream.
var want = projectiontest.Contents{
	"cart c1 checked_out customer u9 v4 updated 10:13": 1,
	"cart c2 checked_out customer u8 v2 updated 10:04": 1,
	"cart c3 open customer - v3 updated 10:11":         1,
	"cart_item c1 p1 1x100":                            1,
	"cart_item c1 p2 1x250":                            1,
	"cart_item c2 p1 3x100":                            1,

	"article a1 by u1 title Second body Body tags [go kafka] v2 published 10:02 updated 10:10": 1,
	"article a2 by u1 title Other body Body 2 tags [] v2 published 10:08 updated 10:12":        1,

	"order c1 cart c1 customer u9 total 350 lines [p1 1x100, p2 1x250] placed 10:13": 1,
	"order c2 cart c2 customer u8 total 300 lines [p1 3x100] placed 10:04":           1,

	"outcome cmd-0-0 test c1 accepted events [cmd-0-0-event-0] command 0:0 decided 10:01":                 1,
	"outcome cmd-0-1 test c1 accepted events [cmd-0-1-event-0] command 0:1 decided 10:05":                 1,
	"outcome cmd-0-2 test c1 accepted events [cmd-0-2-event-0] command 0:2 decided 10:09":                 1,
	"outcome cmd-0-3 test c1 accepted events [cmd-0-3-event-0] command 0:3 decided 10:13":                 1,
	"outcome cmd-1-0 test a1 accepted events [cmd-1-0-event-0] command 1:0 decided 10:02":                 1,
	"outcome cmd-1-1 test c3 accepted events [cmd-1-1-event-0 cmd-1-1-event-1] command 1:1 decided 10:07": 1,
	"outcome cmd-1-2 test a1 accepted events [cmd-1-2-event-0] command 1:2 decided 10:10":                 1,
	"outcome cmd-1-3 test c3 accepted events [cmd-1-3-event-0] command 1:3 decided 10:11":                 1,
	"outcome cmd-2-0 test c2 accepted events [cmd-2-0-event-0 cmd-2-0-event-1] command 2:0 decided 10:04": 1,
	"outcome cmd-2-1 test a2 accepted events [cmd-2-1-event-0] command 2:1 decided 10:08":                 1,
	"outcome cmd-2-2 test a2 accepted events [cmd-2-2-event-0] command 2:2 decided 10:12":                 1,
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	cfg := kappatest.Postgres(t)
	s := open(t, cfg)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
}

// TestLookupsReadTheReadModels reads, through the lookups the API serves,
// what the conformance suite checks in the tables: a cart's total is
// derived from its items, emptied lines are gone.
func TestLookupsReadTheReadModels(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	st := projectiontest.Stream()
	if err := s.Apply(t.Context(), st.Records); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, id := range []string{"c1", "c2", "c3"} {
		c, err := s.Cart(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		c.UpdatedAt = time.Time{}
		if want := map[string]postgres.Cart{
			"c1": {ID: "c1", Status: "checked_out", CustomerID: ptr("u9"), TotalCents: 350, Version: 4,
				Items: []postgres.CartItem{{ProductID: "p1", Quantity: 1, UnitPriceCents: 100}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}},
			"c2": {ID: "c2", Status: "checked_out", CustomerID: ptr("u8"), TotalCents: 300, Version: 2,
				Items: []postgres.CartItem{{ProductID: "p1", Quantity: 3, UnitPriceCents: 100}}},
			"c3": {ID: "c3", Status: "open", Version: 3, Items: []postgres.CartItem{}},
		}[id]; !reflect.DeepEqual(c, want) {
			t.Errorf("cart %s\n got %+v\nwant %+v", id, c, want)
		}
	}
	a, err := s.Article(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	a.PublishedAt, a.UpdatedAt = time.Time{}, time.Time{}
	if want := (postgres.Article{ID: "a1", AuthorID: "u1", Title: "Second", Body: "Body", Tags: []string{"go", "kafka"}, Version: 2}); !reflect.DeepEqual(a, want) {
		t.Errorf("article a1\n got %+v\nwant %+v", a, want)
	}
	o, err := s.Order(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	o.PlacedAt = time.Time{}
	if want := (postgres.Order{ID: "c1", CartID: "c1", CustomerID: "u9", TotalCents: 350,
		Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 1, UnitPriceCents: 100}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}}); !reflect.DeepEqual(o, want) {
		t.Errorf("order c1\n got %+v\nwant %+v", o, want)
	}
	for _, r := range st.Records {
		want, ok := r.Payload.(schemas.Outcome)
		if !ok {
			continue
		}
		got, err := s.Outcome(ctx, want.CommandID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("outcome %s\n got %+v\nwant %+v", want.CommandID, got, want)
		}
	}
	if _, err := s.Cart(ctx, "c9"); !errors.Is(err, postgres.ErrNotFound) {
		t.Errorf("a cart the stream never had: %v, want ErrNotFound", err)
	}
}

func TestWaitAppliedFollowsOutcomes(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	st := projectiontest.Stream()
	if err := s.Apply(t.Context(), st.Records); err != nil {
		t.Fatal(err)
	}
	watch := s.WatchPositions(st.Topic, time.Millisecond, slog.Default())
	// Partition 0 carries commands 0..3; partition 2 commands 0..2.
	if err := watch.WaitApplied(t.Context(), schemas.Position{Partition: 0, Offset: 3}); err != nil {
		t.Fatalf("applied position: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := watch.WaitApplied(ctx, schemas.Position{Partition: 2, Offset: 3})
	if !errors.Is(err, postgres.ErrNotCaughtUp) {
		t.Fatalf("position beyond the projection: got %v, want ErrNotCaughtUp", err)
	}
}
