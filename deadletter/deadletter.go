// Package deadletter keeps the book of parked records. A projection parks
// a record it cannot apply in the dead-letter topic, and parks every later
// record of the same aggregate behind it, so that no event overtakes a
// parked one; other aggregates keep flowing. The dead-letter topic itself
// is the durable state: entries are the parked records, and markers written
// by `kappa dlq redrive|discard` resolve them. Every projector rebuilds its
// book from the topic, so the book survives restarts and rebalances.
package deadletter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Entry is one parked record.
type Entry struct {
	// Position is where the entry sits in the dead-letter topic.
	Position    schemas.Position
	Projection  string
	AggregateID string
	OriginTopic string
	Origin      schemas.Position
	Reason      string
	// Behind is set when the record was parked only to keep order.
	Behind *schemas.Position
	// Record is the parked record as it was in the origin topic.
	Record *kgo.Record
}

// Book holds the unresolved entries of one projection by aggregate, in
// dead-letter order. It is safe for concurrent use.
type Book struct {
	projection string

	mu       sync.Mutex
	open     map[string][]Entry // by aggregate id
	resolved map[schemas.Position]string
	// origins holds the origin of every entry taken: a record parked twice
	// (redelivered after a crash or a rebalance) is one entry.
	origins  map[string]bool
	seen     map[schemas.Position]bool
	parked   int // entries observed
	counts   map[string]int
	consumed map[int32]int64 // next dead-letter offset observed, per partition
	// resolvedSignal gets a value whenever an entry is resolved.
	resolvedSignal chan struct{}
}

// NewBook returns an empty book for a projection.
func NewBook(projection string) *Book {
	return &Book{projection: projection, open: map[string][]Entry{}, resolved: map[schemas.Position]string{}, origins: map[string]bool{},
		seen: map[schemas.Position]bool{}, counts: map[string]int{}, consumed: map[int32]int64{}, resolvedSignal: make(chan struct{}, 1)}
}

// Observe applies one dead-letter record: an entry of this projection adds
// to the book, a marker resolves the entry it names. Records of other
// projections only advance the consumed offsets. Observing a record twice
// is harmless.
func (b *Book) Observe(r *kgo.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consumed[r.Partition] = max(b.consumed[r.Partition], r.Offset+1)
	h := kafka.HeaderMap(r)
	if h[HeaderProjection] != b.projection {
		return
	}
	pos := kafka.Position(r)
	if b.seen[pos] {
		return
	}
	b.seen[pos] = true
	if action := h[HeaderAction]; action != "" {
		target, err := schemas.ParsePosition(h[HeaderResolves])
		if err != nil {
			return
		}
		if _, again := b.resolved[target]; again {
			return // resolved twice (a redrive raced another): counted once
		}
		b.resolved[target] = action
		b.counts[action]++
		select {
		case b.resolvedSignal <- struct{}{}:
		default:
		}
		agg := string(r.Key)
		b.open[agg] = slices.DeleteFunc(b.open[agg], func(e Entry) bool { return e.Position == target })
		if len(b.open[agg]) == 0 {
			delete(b.open, agg)
		}
		return
	}
	e, err := entryOf(r, h)
	if err != nil {
		return
	}
	origin := e.OriginTopic + "/" + e.Origin.String()
	if b.origins[origin] {
		return
	}
	b.origins[origin] = true
	b.parked++
	if _, done := b.resolved[pos]; done {
		return // the marker came first (read out of order across partitions)
	}
	b.open[e.AggregateID] = append(b.open[e.AggregateID], e)
}

// Has reports whether the record at origin was ever parked.
func (b *Book) Has(originTopic string, origin schemas.Position) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.origins[originTopic+"/"+origin.String()]
}

// FirstOpen returns the first unresolved entry of an aggregate, if any.
func (b *Book) FirstOpen(aggregateID string) (Entry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	entries := b.open[aggregateID]
	if len(entries) == 0 {
		return Entry{}, false
	}
	return entries[0], true
}

// Open returns the unresolved entries, by aggregate in dead-letter order.
func (b *Book) Open() map[string][]Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string][]Entry, len(b.open))
	for k, v := range b.open {
		out[k] = slices.Clone(v)
	}
	return out
}

// Orphaned returns, sorted, the aggregates whose open entries were all
// parked only to keep order behind an entry that is resolved by now: a
// redrive or discard took its snapshot of the aggregate while the
// projection was still parking more of it. They need nothing but to flow.
func (b *Book) Orphaned() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var orphaned []string
	for agg, entries := range b.open {
		if !slices.ContainsFunc(entries, func(e Entry) bool { return e.Behind == nil }) {
			orphaned = append(orphaned, agg)
		}
	}
	slices.Sort(orphaned)
	return orphaned
}

// Resolved signals (without blocking the book) that an entry was resolved
// since the last receive.
func (b *Book) Resolved() <-chan struct{} { return b.resolvedSignal }

// Counts returns how many entries are open, how many were ever parked, and
// how many were redriven and discarded.
func (b *Book) Counts() (open, parked, redriven, discarded int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.open {
		open += len(v)
	}
	return open, b.parked, b.counts[ActionRedriven], b.counts[ActionDiscarded]
}

// caughtUp reports whether the book has observed the topic up to ends.
func (b *Book) caughtUp(ends map[int32]int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, end := range ends {
		if b.consumed[p] < end {
			return false
		}
	}
	return true
}

// Follow keeps the book up to date with the dead-letter topic until ctx
// ends.
func (b *Book) Follow(ctx context.Context, conn kafka.Connection, topic string) error {
	cl, err := conn.NewClient(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return fmt.Errorf("follow dead letters: %w", err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachRecord(b.Observe)
	}
}

// WaitCaughtUp waits until the book has observed every record the topic
// holds now.
func (b *Book) WaitCaughtUp(ctx context.Context, conn kafka.Connection, topic string) error {
	ends, err := endOffsets(ctx, conn, topic)
	if err != nil {
		return err
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !b.caughtUp(ends) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("catch up with %s: %w", topic, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func endOffsets(ctx context.Context, conn kafka.Connection, topic string) (map[int32]int64, error) {
	cl, err := conn.NewClient()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return kafka.EndOffsets(ctx, cl, topic)
}

// Load reads the whole dead-letter topic into a book.
func Load(ctx context.Context, conn kafka.Connection, topic, projection string) (*Book, error) {
	b := NewBook(projection)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Follow(ctx, conn, topic) }()
	err := b.WaitCaughtUp(ctx, conn, topic)
	cancel()
	if ferr := <-done; err == nil {
		err = ferr
	}
	return b, err
}
