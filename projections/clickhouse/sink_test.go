package clickhouse_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/schemas"
)

func ptr[T any](v T) *T { return &v }

func stream(topic string) *kappatest.Stream {
	s := kappatest.NewStream(topic)
	s.Command(0, "c1", schemas.CartProductAddedV1{ProductID: "p1", Quantity: 2, UnitPriceCents: 100})
	s.Command(1, "a1", schemas.ArticlePublishedV1{AuthorID: "u1", Title: "First", Body: "Body", Tags: []string{"go"}})
	s.Command(0, "c1", schemas.CartProductAddedV1{ProductID: "p2", Quantity: 1, UnitPriceCents: 250})
	s.Command(1, "a2", schemas.ArticlePublishedV1{AuthorID: "u1", Title: "Other", Body: "Body", Tags: nil})
	s.Command(0, "c1", schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 1})
	s.Command(1, "a1", schemas.ArticleUpdatedV1{Title: ptr("Second")})
	s.Command(0, "c1", schemas.CartCheckedOutV1{CustomerID: "u9", OrderID: "c1", TotalCents: 350,
		Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 1, UnitPriceCents: 100}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}})
	s.Command(2, "c2", schemas.CartProductAddedV1{ProductID: "p1", Quantity: 3, UnitPriceCents: 100},
		schemas.CartCheckedOutV1{CustomerID: "u8", OrderID: "c2", TotalCents: 300,
			Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 3, UnitPriceCents: 100}}})
	return s
}

// counts are plain count() per table and the aggregates of the
// materialized views, never FINAL: a duplicate must show.
type counts struct {
	Events, CartLines, Orders, OrderLines, Articles uint64
	DistinctEvents                                  uint64
	P1Units, P1Revenue, U1Published                 int64
}

func readCounts(t *testing.T, s *clickhouse.Store) counts {
	t.Helper()
	db := s.Database()
	var c counts
	for q, dst := range map[string]*uint64{
		"SELECT count() FROM " + db + ".events":             &c.Events,
		"SELECT uniqExact(event_id) FROM " + db + ".events": &c.DistinctEvents,
		"SELECT count() FROM " + db + ".cart_lines":         &c.CartLines,
		"SELECT count() FROM " + db + ".orders":             &c.Orders,
		"SELECT count() FROM " + db + ".order_lines":        &c.OrderLines,
		"SELECT count() FROM " + db + ".articles":           &c.Articles,
	} {
		if err := s.Conn().QueryRow(t.Context(), q).Scan(dst); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for q, dst := range map[string]*int64{
		"SELECT toInt64(sum(units)) FROM " + db + ".revenue_per_product_hour WHERE product_id = 'p1'":         &c.P1Units,
		"SELECT toInt64(sum(revenue_cents)) FROM " + db + ".revenue_per_product_hour WHERE product_id = 'p1'": &c.P1Revenue,
		"SELECT toInt64(sum(published)) FROM " + db + ".articles_per_author_day WHERE author_id = 'u1'":       &c.U1Published,
	} {
		if err := s.Conn().QueryRow(t.Context(), q).Scan(dst); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return c
}

var want = counts{
	Events: 9, DistinctEvents: 9, CartLines: 4, Orders: 2, OrderLines: 3, Articles: 3,
	P1Units: 4, P1Revenue: 400, U1Published: 2,
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

func TestApplyingABatchTwiceLeavesOneCopy(t *testing.T) {
	s := open(t, kappatest.ClickHouse(t))
	st := stream("events")
	for range 2 {
		if err := s.Apply(t.Context(), st.Records); err != nil {
			t.Fatal(err)
		}
	}
	if got := readCounts(t, s); got != want {
		t.Fatalf("counts\n got %+v\nwant %+v", got, want)
	}
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

// TestRestartMidStreamResumesExactly stops after every prefix, including a
// crash that left typed tables ahead of the events table, then resumes from
// ClickHouse's own contents with a fresh store.
func TestRestartMidStreamResumesExactly(t *testing.T) {
	st := stream("events")
	for cut := 1; cut < len(st.Records); cut += 2 {
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
			cfg := kappatest.ClickHouse(t)
			first := open(t, cfg)
			if err := first.Apply(t.Context(), st.Records[:cut]); err != nil {
				t.Fatal(err)
			}
			// The crash: the next batch reached only the typed tables.
			partial := st.Records[cut:min(cut+3, len(st.Records))]
			if err := first.ApplyTypedOnly(t.Context(), partial); err != nil {
				t.Fatal(err)
			}

			second := open(t, cfg)
			next, err := second.Resume(t.Context(), st.Topic, []int32{0, 1, 2})
			if err != nil {
				t.Fatal(err)
			}
			rest := kappatest.From(st.Records, next)
			for i := 0; i < len(rest); i += 2 {
				if err := second.Apply(t.Context(), rest[i:min(i+2, len(rest))]); err != nil {
					t.Fatal(err)
				}
			}
			if got := readCounts(t, second); !reflect.DeepEqual(got, want) {
				t.Fatalf("counts\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestBindTopicKeepsTheFirstID(t *testing.T) {
	kappatest.CheckBindTopic(t, open(t, kappatest.ClickHouse(t)))
}
