package postgres

import (
	"math/rand/v2"
	"testing"
)

// TestLineChangesComposeLikeSequentialApplication checks the fold against
// applying events one by one, including removals of more than the line
// holds (which the aggregate refuses, but the old per-event statements
// treated as emptying the line, so the fold must too).
func TestLineChangesComposeLikeSequentialApplication(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		start := rng.Int64N(5)
		quantity, price, hasPrice := start, int64(-1), false
		var folded lineChange
		for i := range 1 + rng.IntN(8) {
			var c lineChange
			if rng.IntN(2) == 0 {
				n, p := 1+rng.Int64N(4), rng.Int64N(1000)
				c = added(n, p)
				quantity, price, hasPrice = quantity+n, p, true
			} else {
				n := 1 + rng.Int64N(4)
				c = removed(n)
				quantity = max(quantity-n, 0)
			}
			if i == 0 {
				folded = c
			} else {
				folded = folded.then(c)
			}
		}
		if got := max(start+folded.delta, folded.floor); got != quantity {
			t.Fatalf("from %d: folded %+v gives %d, sequential %d", start, folded, got, quantity)
		}
		if hasPrice != (folded.price != nil) || (hasPrice && *folded.price != price) {
			t.Fatalf("price: folded %v, sequential %d (set %v)", folded.price, price, hasPrice)
		}
	}
}
