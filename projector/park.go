package projector

import (
	"context"
	"fmt"
	"time"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// prepare decides which records to park: those that cannot be decoded, and
// every later record of their aggregates and of aggregates the book holds
// open. It runs after the previous batch is applied, so that the book has
// what that batch parked.
func (p *Projector) prepare(ctx context.Context, col []item) prepared {
	b := prepared{items: col}
	parkedInBatch := map[string]string{} // aggregate -> origin position of its first parked record
	bookCurrent := false
	for i, it := range col {
		r := it.raw
		aggregate := string(r.Key)
		if it.undecodable != nil {
			b.dead = append(b.dead, deadletter.Parking{Record: r, Reason: it.undecodable})
			if _, ok := parkedInBatch[aggregate]; !ok {
				parkedInBatch[aggregate] = kafka.Position(r).String()
			}
			continue
		}
		if it.rec.Envelope.Type == schemas.OutcomeType {
			continue // outcomes change no aggregate's read model; they flow
		}
		behind, inBatch := parkedInBatch[aggregate]
		if _, ok := p.parker.Behind(aggregate); ok && !inBatch && !bookCurrent {
			// The entry may have been redriven or discarded a moment ago;
			// parking behind it now would strand this record. Read the
			// dead-letter topic to its end first (rare: only when an
			// aggregate is parked). Failing that, parking keeps the order.
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := p.parker.CaughtUp(waitCtx); err != nil {
				p.log.Warn("read the dead-letter topic to its end before parking", "err", err)
			}
			cancel()
			bookCurrent = true
		}
		if origin, ok := p.parker.Behind(aggregate); ok && !inBatch {
			behind, inBatch = origin, true
		}
		if inBatch {
			reason := fmt.Errorf("%w: aggregate %s waits behind the record parked at %s", ErrParkedBehind, aggregate, behind)
			b.dead = append(b.dead, deadletter.Parking{Record: r, Reason: reason, Behind: behind})
			b.items[i].rec = parkedRecord(r, reason)
		}
	}
	return b
}

// park writes records to the dead-letter topic before their batch is
// applied, so that a parked record is never lost.
func (p *Projector) park(ctx context.Context, letters []deadletter.Parking) error {
	if len(letters) == 0 {
		return nil
	}
	n, err := p.parker.Park(ctx, letters)
	if n > 0 {
		p.cfg.Observer.DeadLettered(n)
	}
	return err
}
