package projector

import (
	"context"
	"fmt"
	"time"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/schemas"
)

// isolate applies a refused batch one record at a time. A record the sink
// refuses for its contents PoisonAttempts times is parked, and so is every
// later record of its aggregate; other records are applied as usual, and
// transient errors are retried as ever.
func (p *Projector) isolate(ctx context.Context, items []item, blockedSince time.Time) error {
	parkedHere := map[string]string{} // aggregate -> origin position of its first parked record
	for _, it := range items {
		r := it.rec
		aggregate := string(it.raw.Key)
		if _, parked := r.Payload.(schemas.Parked); !parked && r.Envelope.Type != schemas.OutcomeType {
			if behind, ok := parkedHere[aggregate]; ok {
				reason := fmt.Errorf("%w: aggregate %s waits behind the record parked at %s", ErrParkedBehind, aggregate, behind)
				if err := p.park(ctx, []deadletter.Parking{{Record: it.raw, Reason: reason, Behind: behind, Attempts: 1}}); err != nil {
					return err
				}
				r = parkedRecord(it.raw, reason)
			}
		}
		retry := newBackoff(100*time.Millisecond, p.cfg.MaxRetryBackoff)
		for attempt := 1; ; attempt++ {
			err := p.sink.Apply(ctx, []schemas.Record{r})
			if err == nil {
				p.applied.Add(1)
				break
			}
			if err := p.giveUp(ctx, err); err != nil {
				return err
			}
			if p.permanent(err) && attempt >= p.cfg.PoisonAttempts {
				if err := p.park(ctx, []deadletter.Parking{{Record: it.raw, Reason: err, Attempts: attempt}}); err != nil {
					return err
				}
				if _, ok := parkedHere[aggregate]; !ok {
					parkedHere[aggregate] = r.Position.String()
				}
				r = parkedRecord(it.raw, err) // still applied, so that the position moves past it
				continue
			}
			p.cfg.Observer.BatchFailed(err)
			if time.Since(blockedSince) > p.cfg.MaxBlock {
				return errYield
			}
			p.log.Error("apply record; retrying", "topic", r.Topic, "partition", r.Position.Partition, "offset", r.Position.Offset, "attempt", attempt, "err", err)
			if err := retry.wait(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}
