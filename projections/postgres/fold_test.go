package postgres_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

// randomCartHistory decides random commands against a few carts with the
// aggregate's own rules, so adds, partial and full removals and re-adds of
// the same line interleave, and returns the stream with the final states.
func randomCartHistory(rng *rand.Rand, carts, commands int) (*kappatest.Stream, map[string]*aggregate.State) {
	st := kappatest.NewStream("events")
	states := map[string]*aggregate.State{}
	for range commands {
		k := rng.IntN(carts)
		id := fmt.Sprintf("cart-%d", k)
		s := states[id]
		if s == nil {
			s = &aggregate.State{}
			states[id] = s
		}
		product := fmt.Sprintf("p%d", rng.IntN(3))
		var cmd any
		switch n := rng.IntN(20); {
		case n == 0:
			cmd = schemas.CheckoutV1{CustomerID: "u1"}
		case n < 9:
			held := int64(1)
			if s.Cart != nil && s.Cart.Lines[product].Quantity > 0 {
				held = s.Cart.Lines[product].Quantity
			}
			cmd = schemas.RemoveProductV1{ProductID: product, Quantity: new(1 + rng.Int64N(held))}
		default:
			cmd = schemas.AddProductV1{ProductID: product, Quantity: new(1 + rng.Int64N(4)), UnitPriceCents: new(int64(100 + len(product)))}
		}
		events, rejection := aggregate.Decide(s, id, cmd)
		if rejection != nil {
			continue
		}
		for _, e := range events {
			aggregate.Apply(s, e)
		}
		st.Command(int32(k%3), id, events...) // batches span partitions, applied concurrently
	}
	return st, states
}

// TestFoldedBatchesMatchTheAggregate applies random histories in random
// batch sizes, with redeliveries of earlier records mixed in, and compares
// every cart with the aggregate that decided its events.
func TestFoldedBatchesMatchTheAggregate(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			st, states := randomCartHistory(rng, 5, 400)
			s := open(t, kappatest.Postgres(t))
			for i := 0; i < len(st.Records); {
				n := 1 + rng.IntN(60)
				from := max(0, i-rng.IntN(10)) // some records again
				if err := s.Apply(t.Context(), st.Records[from:min(i+n, len(st.Records))]); err != nil {
					t.Fatal(err)
				}
				i += n
			}
			for id, want := range states {
				got, err := s.Cart(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				var total int64
				var items []string
				for product, l := range want.Cart.Lines {
					total += l.Quantity * l.UnitPriceCents
					items = append(items, fmt.Sprintf("%s:%d@%d", product, l.Quantity, l.UnitPriceCents))
				}
				var gotItems []string
				for _, it := range got.Items {
					gotItems = append(gotItems, fmt.Sprintf("%s:%d@%d", it.ProductID, it.Quantity, it.UnitPriceCents))
				}
				slices.Sort(items)
				slices.Sort(gotItems)
				if !slices.Equal(gotItems, items) || got.TotalCents != total || got.Version != want.Version ||
					(got.Status == "checked_out") != want.Cart.CheckedOut {
					t.Errorf("%s: got items %v total %d version %d status %s; want items %v total %d version %d checked out %v",
						id, gotItems, got.TotalCents, got.Version, got.Status, items, total, want.Version, want.Cart.CheckedOut)
				}
			}
		})
	}
}
