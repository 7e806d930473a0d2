package processor

import "github.com/kappa-cqrs/kappa/producer/aggregate"

// stateCache keeps decoded aggregates in front of the store, up to a
// bound, in two generations: recent takes every aggregate used, and when
// it holds half the bound it becomes older and a new recent begins. An
// aggregate used within the last half-bound of others stays; one found
// only in older moves back to recent. This is an LRU's behaviour at
// the cost of map operations only: hashicorp's LRU, moving a list
// element on every use, was 8% of the processor's CPU at 6,000 commands
// a second (a third of what deciding from the store added), and its
// list elements were objects for the collector to scan.
type stateCache struct {
	recent, older map[cacheKey]aggregate.State
	half          int
}

// cacheKey names an aggregate in the cache.
type cacheKey struct {
	partition int32
	key       string
}

// newStateCache returns a cache of bound aggregates, rounded up to an even
// number.
func newStateCache(bound int) *stateCache {
	half := max((bound+1)/2, 1)
	return &stateCache{recent: make(map[cacheKey]aggregate.State, half), older: map[cacheKey]aggregate.State{}, half: half}
}

func (c *stateCache) get(k cacheKey) (aggregate.State, bool) {
	if st, ok := c.recent[k]; ok {
		return st, true
	}
	st, ok := c.older[k]
	if ok {
		c.put(k, st)
	}
	return st, ok
}

// put keeps an aggregate's state as used now.
func (c *stateCache) put(k cacheKey, st aggregate.State) {
	// Until recent is full, one hash of the key is all a put costs.
	if len(c.recent) >= c.half {
		if _, ok := c.recent[k]; !ok {
			c.older, c.recent = c.recent, make(map[cacheKey]aggregate.State, c.half)
		}
	}
	c.recent[k] = st
}

// drop forgets the aggregates of the partitions.
func (c *stateCache) drop(parts map[int32]bool) {
	for _, m := range []map[cacheKey]aggregate.State{c.recent, c.older} {
		for k := range m {
			if parts[k.partition] {
				delete(m, k)
			}
		}
	}
}
