package processor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
)

// TestTheHeldStateIsBounded: the processor counts the aggregates its
// store holds, one per aggregate however many commands it took, while it
// holds in memory only those of one transaction. Restarted with its store, it reads only
// the changelog written since; with its store lost, it restores the same
// aggregates from the changelog.
func TestTheHeldStateIsBounded(t *testing.T) {
	c := newCluster(t, 2)
	a := c.start(t, "a")
	const rounds, cartsPerRound = 10, 30
	for round := range rounds {
		var cmds []command
		for i := range cartsPerRound {
			part := int32(i % 2)
			cmds = append(cmds, adds(part, fmt.Sprintf("cart-%d-%d", round, i), 3)...)
		}
		c.sendAndWait(t, cmds...)
	}
	held, _ := a.obs.state()
	a.obs.mu.Lock()
	inMemory := a.obs.maxInMemory
	a.obs.mu.Unlock()
	if held.Aggregates != rounds*cartsPerRound || inMemory == 0 || inMemory > cartsPerRound {
		t.Fatalf("held %+v, at most %d aggregates in memory; want %d aggregates stored and at most the %d of one round in memory",
			held, inMemory, rounds*cartsPerRound, cartsPerRound)
	}
	a.stop(t)

	a = c.start(t, "a") // the same store
	c.sendAndWait(t, addProduct(0, "cart-new", "p1"), addProduct(1, "cart-new-1", "p1"))
	kappatest.Eventually(t, waitFor, 10*time.Millisecond, func() error {
		held, restored := a.obs.state()
		if held.Aggregates != rounds*cartsPerRound+2 || restored != 0 {
			return fmt.Errorf("restarted with its store: held %+v, %d records restored; want %d aggregates and nothing to restore",
				held, restored, rounds*cartsPerRound+2)
		}
		return nil
	})
	a.stop(t)

	b := c.start(t, "b") // a store of its own, empty
	c.sendAndWait(t, addProduct(0, "cart-new-2", "p1"), addProduct(1, "cart-new-3", "p1"))
	kappatest.Eventually(t, waitFor, 10*time.Millisecond, func() error {
		held, restored := b.obs.state()
		if held.Aggregates != rounds*cartsPerRound+4 || restored < rounds*cartsPerRound+2 {
			return fmt.Errorf("started without a store: held %+v, %d records restored; want %d aggregates, restored from at least %d records",
				held, restored, rounds*cartsPerRound+4, rounds*cartsPerRound+2)
		}
		return nil
	})
	c.sendAndWait(t, adds(0, "cart-0-0", 2)...) // at versions 4 and 5
	b.stop(t)
	c.verify(t)
}
