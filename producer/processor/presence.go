package processor

import (
	"context"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"
)

// Commands that create an aggregate name an id the store has never held,
// and looking such an id up walks every level of the store to find
// nothing: in the load test's mix, where most aggregates it changes are
// in the cache, those look-ups were most of the store's reads. A bloom
// filter of the ids a partition's store holds answers "not there" from
// memory, at about 10 bits an aggregate.
//
// The filter is built from the store in the background once a partition
// is restored, so that a restore's time does not grow with it; until it
// is built, every look-up goes to the store. It must never miss an id the
// store holds, or a command would be decided against an empty aggregate:
// the store's iterator sees what was committed before it opened, and
// every aggregate committed after the build began is added as well.

// presenceFalsePositives is the share of absent ids the filter lets
// through to the store, at the number of ids it is sized for.
const presenceFalsePositives = 0.01

// minPresenceCapacity is the fewest ids a filter is sized for (12 KiB).
var minPresenceCapacity = uint(10000)

// presence tells whether one partition's store may hold an aggregate.
type presence struct {
	mu sync.Mutex
	// filter holds every aggregate id of the store; nil until the first
	// build ends, and then only the Run goroutine reads or adds to it.
	filter *bloom.BloomFilter
	// capacity is the number of ids the filter, or the one being built,
	// is sized for; the filter is rebuilt, twice as large, past it.
	capacity uint
	// building says a build runs; it adds pending to its filter when it
	// ends: the ids stored since it began.
	building bool
	pending  []string
}

// mayHold reports whether the store may hold the aggregate id: false
// means it certainly does not.
func (pr *presence) mayHold(id string) bool {
	pr.mu.Lock()
	f := pr.filter
	pr.mu.Unlock()
	return f == nil || f.TestString(id)
}

// stored records that the store now holds the aggregates created.
func (pr *presence) stored(created map[string]bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for id := range created {
		if pr.filter != nil {
			pr.filter.AddString(id)
		}
		if pr.building {
			pr.pending = append(pr.pending, id)
		}
	}
}

// needsBuild reports whether a filter for held aggregates should be
// built: none is, or the filter is too small for them, and none is being
// built. It marks the build begun, sized for twice held.
func (pr *presence) needsBuild(held int64) (capacity uint, ok bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	// After a failed build, no other is tried until the partition
	// outgrows the failed one's size.
	if pr.building || (pr.capacity > 0 && uint(max(held, 0)) <= pr.capacity) {
		return 0, false
	}
	pr.building, pr.capacity = true, max(2*uint(max(held, 0)), minPresenceCapacity)
	return pr.capacity, true
}

// memoryBytes is what the filter holds.
func (pr *presence) memoryBytes() int64 {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.filter == nil {
		return 0
	}
	return int64(pr.filter.Cap() / 8)
}

// build fills a filter of capacity ids with the partition's aggregates
// in the store and then serves it. A build that fails leaves the previous
// filter serving, or none.
func (pr *presence) build(ctx context.Context, st *store, part int32, capacity uint) error {
	return pr.serve(fill(ctx, st, part, capacity))
}

// fill returns a filter of capacity ids holding the partition's
// aggregates in the store.
func fill(ctx context.Context, st *store, part int32, capacity uint) (*bloom.BloomFilter, error) {
	f := bloom.NewWithEstimates(capacity, presenceFalsePositives)
	lower, upper := partitionBounds(kindAggregate, part)
	n := 0
	_, err := st.eachBetween(lower, upper, func(key, _ []byte) bool {
		f.Add(key[5:])
		n++
		return n%4096 != 0 || ctx.Err() == nil
	})
	if err == nil {
		err = ctx.Err()
	}
	return f, err
}

// serve ends the build: a filter filled without error serves, with the
// ids stored since the build began.
func (pr *presence) serve(f *bloom.BloomFilter, err error) error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pending := pr.pending
	pr.building, pr.pending = false, nil
	if err != nil {
		return err
	}
	for _, id := range pending {
		f.AddString(id)
	}
	pr.filter = f
	return nil
}

// buildPresence starts building the filter of a partition if it needs
// one.
func (p *Processor) buildPresence(part int32, o *owned) {
	capacity, ok := o.presence.needsBuild(o.cp.Aggregates)
	if !ok {
		return
	}
	p.builds.Add(1)
	go func() {
		defer p.builds.Done()
		if err := o.presence.build(p.buildsCtx, p.store, part, capacity); err != nil && p.buildsCtx.Err() == nil {
			p.log.Warn("build the filter of aggregates in the state store; look-ups go to the store", "partition", part, "err", err)
		}
	}()
}
