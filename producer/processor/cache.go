package processor

import "github.com/kappa-cqrs/kappa/producer/aggregate"

// stateCache keeps decoded aggregates in front of the store, up to a
// bound, evicting by the clock algorithm: each slot has a used bit that a
// hit sets, and a new aggregate takes the first slot the hand finds
// unused, clearing the bits it passes. That keeps the recently used as an
// LRU does, at the cost of a map operation per hit. Hashicorp's LRU,
// moving a list element on every use, was 8% of the processor's CPU at
// 6,000 commands a second; two generations of maps that swapped at half
// the bound cost as little per hit but held between half the bound and
// all of it, missing about twice as often as an LRU of the same bound
// where the live aggregates outnumber it, and each miss is a read from the
// store (docs/PERFORMANCE.md).
type stateCache struct {
	// slot finds an aggregate's slot by partition, then by key: a map
	// with string keys takes Go's fast path for them, where a map keyed
	// by a struct of partition and key hashed and compared generically
	// (the cache's map operations were 7% of the processor's CPU).
	slot  map[int32]map[string]int
	slots []cacheSlot
	hand  int
	bound int
	// part and partSlot are the last partition asked for and its map:
	// a poll's commands come a partition at a time.
	part     int32
	partSlot map[string]int
}

// cacheKey names an aggregate in the cache.
type cacheKey struct {
	partition int32
	key       string
}

type cacheSlot struct {
	key  cacheKey
	st   aggregate.State
	used bool
	held bool
}

// newStateCache returns a cache of at most bound aggregates.
func newStateCache(bound int) *stateCache {
	bound = max(bound, 1)
	return &stateCache{slot: map[int32]map[string]int{}, bound: bound}
}

// slotsOf returns the slots of a partition's aggregates by key.
func (c *stateCache) slotsOf(part int32) map[string]int {
	if c.partSlot != nil && c.part == part {
		return c.partSlot
	}
	m, ok := c.slot[part]
	if !ok {
		m = map[string]int{}
		c.slot[part] = m
	}
	c.part, c.partSlot = part, m
	return m
}

func (c *stateCache) get(k cacheKey) (aggregate.State, bool) {
	i, ok := c.slotsOf(k.partition)[k.key]
	if !ok {
		return aggregate.State{}, false
	}
	s := &c.slots[i]
	s.used = true
	return s.st, true
}

// put keeps an aggregate's state as used now.
func (c *stateCache) put(k cacheKey, st aggregate.State) {
	m := c.slotsOf(k.partition)
	if i, ok := m[k.key]; ok {
		c.slots[i].st, c.slots[i].used = st, true
		return
	}
	if len(c.slots) < c.bound {
		m[k.key] = len(c.slots)
		c.slots = append(c.slots, cacheSlot{key: k, st: st, held: true})
		return
	}
	for {
		s := &c.slots[c.hand]
		if s.used {
			s.used = false
			c.hand = (c.hand + 1) % c.bound
			continue
		}
		if s.held {
			delete(c.slot[s.key.partition], s.key.key)
		}
		*s = cacheSlot{key: k, st: st, held: true}
		m[k.key] = c.hand
		c.hand = (c.hand + 1) % c.bound
		return
	}
}

// drop forgets the aggregates of the partitions; their slots are the
// first the hand takes.
func (c *stateCache) drop(parts map[int32]bool) {
	for i := range c.slots {
		if s := &c.slots[i]; s.held && parts[s.key.partition] {
			*s = cacheSlot{}
		}
	}
	for part := range parts {
		delete(c.slot, part)
	}
	c.partSlot = nil
}
