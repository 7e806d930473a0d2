package projectiontest_test

import (
	"fmt"
	"testing"

	"github.com/kappa-cqrs/kappa/projectiontest"
	"github.com/kappa-cqrs/kappa/schemas"
)

func TestMemorySinkConformance(t *testing.T) {
	projectiontest.Run(t, func(t *testing.T) projectiontest.Harness[*projectiontest.MemorySink] {
		return memoryHarness(projectiontest.NewMemorySink())
	})
}

func memoryHarness(s *projectiontest.MemorySink) projectiontest.Harness[*projectiontest.MemorySink] {
	return projectiontest.Harness[*projectiontest.MemorySink]{
		// The sink holds nothing but its store: a restart opens the same.
		Open:     func(*testing.T) *projectiontest.MemorySink { return s },
		Contents: func(_ *testing.T, s *projectiontest.MemorySink) projectiontest.Contents { return s.Contents() },
		Want:     memoryWant(),
		Refused: []any{
			schemas.CartProductAddedV1{ProductID: "p1", Quantity: 0, UnitPriceCents: 10},
			schemas.CartProductAddedV1{ProductID: "p1", Quantity: 1, UnitPriceCents: -1},
			schemas.CartProductRemovedV1{ProductID: "p1", Quantity: -2},
		},
	}
}

// memoryWant is every event and outcome of the stream, once.
func memoryWant() projectiontest.Contents {
	want := projectiontest.Contents{}
	for _, r := range projectiontest.Stream().Records {
		e := r.Envelope
		if o, ok := r.Payload.(schemas.Outcome); ok {
			want[fmt.Sprintf("outcome %s %s accepted at %s", o.CommandID, o.AggregateID, r.Position)] = 1
			continue
		}
		want[fmt.Sprintf("event %s %s %s v%d at %s", e.ID, e.Type, e.AggregateID, e.AggregateVersion, r.Position)] = 1
	}
	if len(want) != 24 {
		panic(fmt.Sprintf("the stream has %d records, want 13 events and 11 outcomes", len(want)))
	}
	return want
}
