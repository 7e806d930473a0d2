package consumer

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// prepare decides which records to park: those that cannot be decoded, and
// every later record of their aggregates and of aggregates the book holds
// open. It runs after the previous batch is applied, so that the book has
// what that batch parked.
func (c *Consumer) prepare(ctx context.Context, col collected) prepared {
	b := prepared{batch: col.batch, raws: col.raws}
	parkedInBatch := map[string]string{} // aggregate -> origin position of its first parked record
	bookCurrent := false
	for i, r := range col.raws {
		aggregate := string(r.Key)
		if err, bad := col.undecodable[i]; bad {
			b.dead = append(b.dead, deadLetter{record: r, reason: err})
			if _, ok := parkedInBatch[aggregate]; !ok {
				parkedInBatch[aggregate] = kafka.Position(r).String()
			}
			continue
		}
		if b.batch[i].Envelope.Type == schemas.OutcomeType {
			continue // outcomes change no aggregate's read model; they flow
		}
		behind, inBatch := parkedInBatch[aggregate]
		if _, ok := c.book.FirstOpen(aggregate); ok && !inBatch && !bookCurrent {
			// The entry may have been redriven or discarded a moment ago;
			// parking behind it now would strand this record. Read the
			// dead-letter topic to its end first (rare: only when an
			// aggregate is parked). Failing that, parking keeps the order.
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := c.book.WaitCaughtUp(waitCtx, c.cfg.Kafka, c.cfg.DeadLetterTopic); err != nil {
				c.log.Warn("read the dead-letter topic to its end before parking", "err", err)
			}
			cancel()
			bookCurrent = true
		}
		if entry, ok := c.book.FirstOpen(aggregate); ok && !inBatch {
			behind, inBatch = entry.Origin.String(), true
		}
		if inBatch {
			b.dead = append(b.dead, deadLetter{record: r, reason: fmt.Errorf("%w: aggregate %s waits behind the record parked at %s", ErrParkedBehind, aggregate, behind), behind: behind})
			b.batch[i] = schemas.Record{Topic: r.Topic, Position: kafka.Position(r)}
		}
	}
	return b
}

type deadLetter struct {
	record   *kgo.Record
	reason   error
	behind   string // origin position of the record this one waits behind
	attempts int    // tries to apply it; 0 for records that never reached the sink
}

// deadLetter parks records, keyed as the original, so the partition keeps
// flowing. It produces synchronously before the batch is applied, so a
// parked record is never lost, and enters them in the book at once, so the
// aggregate's next record is parked behind them.
func (c *Consumer) deadLetter(ctx context.Context, dead []deadLetter) error {
	// A redelivered record that is parked already is not parked again.
	dead = slices.DeleteFunc(slices.Clone(dead), func(d deadLetter) bool {
		return c.book.Has(d.record.Topic, kafka.Position(d.record))
	})
	if len(dead) == 0 {
		return nil
	}
	records := make([]*kgo.Record, len(dead))
	for i, d := range dead {
		r := d.record
		c.log.Warn("dead-letter record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", d.reason)
		records[i] = deadletter.Letter(c.cfg.DeadLetterTopic, c.cfg.Projection, deadletter.Parking{Record: r, Reason: d.reason, Behind: d.behind, Attempts: d.attempts})
	}
	results := c.client.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		return fmt.Errorf("produce %d dead letters to %s: %w", len(records), c.cfg.DeadLetterTopic, err)
	}
	for _, res := range results {
		c.book.Observe(res.Record)
	}
	c.cfg.Observer.DeadLettered(len(records))
	return nil
}
