package deadletter

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
)

// Parker parks one projection's records in the dead-letter topic and keeps
// its book: it writes entries, follows the topic, says which aggregates
// wait behind a parked record, and redrives the records whose only reason
// to wait is gone. The projection runtime uses it through a small
// interface of its own.
type Parker struct {
	conn       kafka.Connection
	topic      string
	projection string
	client     *kgo.Client
	book       *Book
	log        *slog.Logger
}

// NewParker returns the Parker of projection's entries in topic; Close
// releases its client.
func NewParker(conn kafka.Connection, topic, projection string, log *slog.Logger) (*Parker, error) {
	cl, err := conn.NewClient(append(kafka.DurableProducer(), kgo.ProducerLinger(0))...)
	if err != nil {
		return nil, fmt.Errorf("create the dead-letter client of %s: %w", projection, err)
	}
	return &Parker{conn: conn, topic: topic, projection: projection, client: cl, book: NewBook(projection), log: log}, nil
}

// Close releases the Parker's client.
func (p *Parker) Close() { p.client.Close() }

// Counts returns the book's counts (see Book.Counts).
func (p *Parker) Counts() (open, parked, redriven, discarded int) { return p.book.Counts() }

// Follow keeps the book up to date with the topic until ctx ends.
func (p *Parker) Follow(ctx context.Context) error { return p.book.Follow(ctx, p.conn, p.topic) }

// CaughtUp waits until the book holds every record the topic holds now.
func (p *Parker) CaughtUp(ctx context.Context) error {
	return p.book.WaitCaughtUp(ctx, p.conn, p.topic)
}

// Behind returns the origin position of the first open entry of an
// aggregate: its next records must be parked behind it.
func (p *Parker) Behind(aggregate string) (origin string, parked bool) {
	e, ok := p.book.FirstOpen(aggregate)
	if !ok {
		return "", false
	}
	return e.Origin.String(), true
}

// Park writes the letters, keyed as their records, synchronously, and
// enters them in the book at once, so that an aggregate's next record is
// parked behind them. A record parked already (redelivered after a crash
// or a rebalance) is not parked again. It returns how many it wrote.
func (p *Parker) Park(ctx context.Context, letters []Parking) (int, error) {
	letters = slices.DeleteFunc(slices.Clone(letters), func(l Parking) bool {
		return p.book.Has(l.Record.Topic, kafka.Position(l.Record))
	})
	if len(letters) == 0 {
		return 0, nil
	}
	records := make([]*kgo.Record, len(letters))
	for i, l := range letters {
		r := l.Record
		p.log.Warn("dead-letter record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", l.Reason)
		records[i] = Letter(p.topic, p.projection, l)
	}
	results := p.client.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		return 0, fmt.Errorf("produce %d dead letters to %s: %w", len(records), p.topic, err)
	}
	for _, res := range results {
		p.book.Observe(res.Record)
	}
	return len(records), nil
}

// orphanCheckEvery is how often parked aggregates are checked for entries
// whose only reason to wait is gone, besides each time an entry is resolved.
const orphanCheckEvery = 5 * time.Second

// RedriveOrphans applies, until ctx ends, the records that were parked
// only to keep order behind an entry that has been resolved since: a
// redrive or discard took its snapshot of the dead letters while the
// projection was still parking the aggregate's next records. Such records
// decoded and need nothing but to flow; applying them here (in dead-letter
// order, through the same idempotent path as kappa dlq redrive) keeps
// their aggregate from staying parked until an operator looks again.
// Records of the aggregate that arrive meanwhile are parked behind them,
// since the book shows the aggregate open until they are marked, so order
// holds. Only aggregates of partitions that owns reports are redriven, so
// that two members never apply the same records.
func (p *Parker) RedriveOrphans(ctx context.Context, apply Applier, owns func(partition int32) bool) {
	tick := time.NewTicker(orphanCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.book.Resolved():
		case <-tick.C:
		}
		for _, agg := range p.book.Orphaned() {
			if e, ok := p.book.FirstOpen(agg); !ok || !owns(e.Origin.Partition) {
				continue
			}
			outcomes, err := Redrive(ctx, p.client, p.topic, p.book, Filter{AggregateID: agg}, apply, false)
			if err != nil {
				if ctx.Err() == nil {
					p.log.Warn("redrive records parked behind a resolved entry; retrying later", "aggregate", agg, "err", err)
				}
				continue
			}
			if n := redriven(outcomes); n > 0 {
				p.log.Info("redrove records parked behind a resolved entry", "aggregate", agg, "records", n)
			}
		}
	}
}

func redriven(outcomes []Outcome) int {
	n := 0
	for _, o := range outcomes {
		if o.Action == ActionRedriven {
			n++
		}
	}
	return n
}
