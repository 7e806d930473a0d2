package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/schemas"
)

func ptr[T any](v T) *T { return &v }

// stream is a small history touching every mapping: carts that gain, lose
// and empty lines, a checkout, and an article published then updated.
func stream(topic string) *kappatest.Stream {
	s := kappatest.NewStream(topic)
	s.Command(0, "c1", schemas.CartProductAddedV1{ProductID: "p1", Quantity: 2, UnitPriceCents: 100})
	s.Command(1, "a1", schemas.ArticlePublishedV1{AuthorID: "u1", Title: "First", Body: "Body", Tags: []string{"go"}})
	s.Command(0, "c1", schemas.CartProductAddedV1{ProductID: "p2", Quantity: 1, UnitPriceCents: 250})
	s.Command(1, "c2", schemas.CartProductAddedV1{ProductID: "p1", Quantity: 3, UnitPriceCents: 100})
	s.Command(0, "c1", schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 1})
	s.Command(1, "a1", schemas.ArticleUpdatedV1{Title: ptr("Second"), Tags: &[]string{"go", "kafka"}})
	s.Command(1, "c2", schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 3})
	s.Command(0, "c1", schemas.CartCheckedOutV1{CustomerID: "u9", OrderID: "c1", TotalCents: 350,
		Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 1, UnitPriceCents: 100}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}})
	s.Command(0, "c3", schemas.CartProductAddedV1{ProductID: "p3", Quantity: 5, UnitPriceCents: 999},
		schemas.CartProductAddedV1{ProductID: "p3", Quantity: 1, UnitPriceCents: 999})
	return s
}

type readModels struct {
	Carts    map[string]postgres.Cart
	Article  postgres.Article
	Order    postgres.Order
	Outcomes int
}

func expected() readModels {
	return readModels{
		Carts: map[string]postgres.Cart{
			"c1": {ID: "c1", Status: "checked_out", CustomerID: ptr("u9"), TotalCents: 350, Version: 4,
				Items: []postgres.CartItem{{ProductID: "p1", Quantity: 1, UnitPriceCents: 100}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}},
			"c2": {ID: "c2", Status: "open", TotalCents: 0, Version: 2, Items: []postgres.CartItem{}},
			"c3": {ID: "c3", Status: "open", TotalCents: 5994, Version: 2, Items: []postgres.CartItem{{ProductID: "p3", Quantity: 6, UnitPriceCents: 999}}},
		},
		Article: postgres.Article{ID: "a1", AuthorID: "u1", Title: "Second", Body: "Body", Tags: []string{"go", "kafka"}, Version: 2},
		Order: postgres.Order{ID: "c1", CartID: "c1", CustomerID: "u9", TotalCents: 350,
			Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 1, UnitPriceCents: 100}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}},
		Outcomes: 9,
	}
}

func read(t *testing.T, s *postgres.Store, outcomeIDs []string) readModels {
	t.Helper()
	ctx := t.Context()
	got := readModels{Carts: map[string]postgres.Cart{}}
	for _, id := range []string{"c1", "c2", "c3"} {
		c, err := s.Cart(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		c.UpdatedAt = time.Time{}
		got.Carts[id] = c
	}
	a, err := s.Article(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	a.PublishedAt, a.UpdatedAt = time.Time{}, time.Time{}
	got.Article = a
	o, err := s.Order(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	o.PlacedAt = time.Time{}
	got.Order = o
	for _, id := range outcomeIDs {
		if _, err := s.Outcome(ctx, id); err == nil {
			got.Outcomes++
		} else if !errors.Is(err, postgres.ErrNotFound) {
			t.Fatal(err)
		}
	}
	return got
}

func outcomeIDs(s *kappatest.Stream) []string {
	var ids []string
	for _, r := range s.Records {
		if o, ok := r.Payload.(schemas.Outcome); ok {
			ids = append(ids, o.CommandID)
		}
	}
	return ids
}

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

func assertReadModels(t *testing.T, s *postgres.Store, st *kappatest.Stream) {
	t.Helper()
	if got, want := read(t, s, outcomeIDs(st)), expected(); !reflect.DeepEqual(got, want) {
		t.Fatalf("read models differ\n got: %+v\nwant: %+v", got, want)
	}
}

func TestApplyingABatchTwiceLeavesOneCopy(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	st := stream("events")
	for range 2 {
		if err := s.Apply(t.Context(), st.Records); err != nil {
			t.Fatal(err)
		}
	}
	assertReadModels(t, s, st)
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	cfg := kappatest.Postgres(t)
	s := open(t, cfg)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
}

// TestRestartMidStreamResumesExactly stops the projection after every
// possible prefix of the stream, reopens it, resumes from its own positions
// and also receives an overlapping redelivery; the result is always the
// same as one clean pass.
func TestRestartMidStreamResumesExactly(t *testing.T) {
	st := stream("events")
	for cut := 1; cut < len(st.Records); cut += 3 {
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
			cfg := kappatest.Postgres(t)
			first := open(t, cfg)
			if err := first.Apply(t.Context(), st.Records[:cut]); err != nil {
				t.Fatal(err)
			}
			first.Close()

			second := open(t, cfg)
			next, err := second.Resume(t.Context(), st.Topic, []int32{0, 1})
			if err != nil {
				t.Fatal(err)
			}
			// A redelivery of records the first instance already applied.
			if err := second.Apply(t.Context(), st.Records[max(0, cut-4):cut]); err != nil {
				t.Fatal(err)
			}
			rest := kappatest.From(st.Records, next)
			for i := 0; i < len(rest); i += 2 {
				if err := second.Apply(t.Context(), rest[i:min(i+2, len(rest))]); err != nil {
					t.Fatal(err)
				}
			}
			assertReadModels(t, second, st)
		})
	}
}

func TestWaitAppliedFollowsOutcomes(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	st := stream("events")
	if err := s.Apply(t.Context(), st.Records); err != nil {
		t.Fatal(err)
	}
	// Partition 0 carries commands 0..4; partition 1 commands 0..3.
	if err := s.WaitApplied(t.Context(), "events", schemas.Position{Partition: 0, Offset: 4}, time.Millisecond); err != nil {
		t.Fatalf("applied position: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := s.WaitApplied(ctx, "events", schemas.Position{Partition: 1, Offset: 4}, time.Millisecond)
	if !errors.Is(err, postgres.ErrNotCaughtUp) {
		t.Fatalf("position beyond the projection: got %v, want ErrNotCaughtUp", err)
	}
}

// TestEventsTheReadModelsCannotHoldAreRefused checks that the fold refuses
// what cart_items' constraints refused before events were folded, as a
// permanent error, and writes nothing.
func TestEventsTheReadModelsCannotHoldAreRefused(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	for _, payload := range []any{
		schemas.CartProductAddedV1{ProductID: "p1", Quantity: 0, UnitPriceCents: 10},
		schemas.CartProductAddedV1{ProductID: "p1", Quantity: 1, UnitPriceCents: -1},
		schemas.CartProductRemovedV1{ProductID: "p1", Quantity: -2},
	} {
		st := kappatest.NewStream("events")
		st.Command(0, "c1", payload)
		err := s.Apply(t.Context(), st.Records)
		if err == nil || !s.Permanent(err) {
			t.Errorf("%+v: got %v, want a permanent error", payload, err)
		}
		if _, err := s.Cart(t.Context(), "c1"); !errors.Is(err, postgres.ErrNotFound) {
			t.Errorf("%+v: the cart was written: %v", payload, err)
		}
	}
}

func TestBindTopicKeepsTheFirstID(t *testing.T) {
	kappatest.CheckBindTopic(t, open(t, kappatest.Postgres(t)))
}
