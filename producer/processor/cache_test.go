package processor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kappa-cqrs/kappa/producer/aggregate"
)

// TestTheStateCacheKeepsTheRecentlyUsedWithinItsBound: the cache never
// holds more aggregates than its bound, keeps one that is used while
// others come and go, always returns an aggregate's last state, and
// forgets the partitions it is told to.
func TestTheStateCacheKeepsTheRecentlyUsedWithinItsBound(t *testing.T) {
	const bound = 100
	c := newStateCache(bound)
	hot := cacheKey{0, "cart-hot"}
	c.put(hot, aggregate.State{Version: 1})
	for i := range 1000 {
		k := cacheKey{int32(i % 3), fmt.Sprintf("cart-%d", i)}
		c.put(k, aggregate.State{Version: 1})
		if i%10 == 0 {
			st, ok := c.get(hot)
			if !ok {
				t.Fatalf("after %d others, the aggregate used every 10th was dropped", i+1)
			}
			c.put(hot, aggregate.State{Version: st.Version + 1})
		}
		if n := held(c); n > bound {
			t.Fatalf("after %d aggregates the cache holds %d, over its bound of %d", i+1, n, bound)
		}
	}
	if st, _ := c.get(hot); st.Version != 101 {
		t.Fatalf("the hot aggregate is at version %d, want its last state, 101", st.Version)
	}
	if _, ok := c.get(cacheKey{1, "cart-1"}); ok {
		t.Fatal("the cache still holds an aggregate 999 others came after")
	}
	if _, ok := c.get(cacheKey{int32(999 % 3), "cart-999"}); !ok {
		t.Fatal("the cache dropped the aggregate used last")
	}
	c.drop(map[int32]bool{0: true})
	for part, keys := range c.slot {
		if part == 0 && len(keys) > 0 {
			t.Fatalf("after dropping partition 0 the cache holds %v", keys)
		}
	}
	if _, ok := c.get(hot); ok {
		t.Fatal("after dropping partition 0 the cache still returns its aggregate")
	}
	if held(c) == 0 {
		t.Fatal("dropping partition 0 emptied the others")
	}
}

// held counts the aggregates held.
func held(c *stateCache) int {
	n := 0
	for _, keys := range c.slot {
		n += len(keys)
	}
	return n
}

// The cache holds as many aggregates as its bound: a processor whose
// aggregates in use all fit reads none of them from the store again.
func TestTheStateCacheHoldsItsWholeBound(t *testing.T) {
	const bound = 100
	c := newStateCache(bound)
	for round := range 5 {
		for i := range bound {
			k := cacheKey{int32(i % 3), fmt.Sprintf("cart-%d", i)}
			if _, ok := c.get(k); !ok {
				if round > 0 {
					t.Fatalf("round %d: %v was dropped with only %d aggregates in use", round, k, bound)
				}
				c.put(k, aggregate.State{Version: 1})
			}
		}
	}
	if n := held(c); n != bound {
		t.Fatalf("the cache holds %d aggregates, want %d", n, bound)
	}
}

// BenchmarkStateCache runs the load test's pattern: commands on 12,000
// aggregates over 6 partitions, a partition's commands together, each
// aggregate looked up and, once its transaction commits, put back; the
// cache holds 10,000.
func BenchmarkStateCache(b *testing.B) {
	const aggregates, partitions, bound = 12000, 6, 10000
	keys := make([]cacheKey, aggregates)
	for i := range keys {
		keys[i] = cacheKey{int32(i % partitions), fmt.Sprintf("%08x-0000-4000-8000-%012x", i*7919, i)}
	}
	slices.SortStableFunc(keys, func(a, b cacheKey) int { return int(a.partition - b.partition) })
	c := newStateCache(bound)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for i := range b.N {
		// Runs of 100 commands on one partition, as a fetch hands them out.
		part := (i / 100) % partitions
		k := keys[part*aggregates/partitions+rng.IntN(aggregates/partitions)]
		st, ok := c.get(k)
		if !ok {
			st = aggregate.State{Version: 1}
		}
		st.Version++
		c.put(k, st)
	}
}
