package consumer

import (
	"context"
	"time"

	"github.com/kappa-cqrs/kappa/deadletter"
)

// orphanCheckEvery is how often parked aggregates are checked for entries
// whose only reason to wait is gone, besides each time an entry is resolved.
const orphanCheckEvery = 5 * time.Second

// redriveOrphans applies, until ctx ends, the records that were parked
// only to keep order behind an entry that has been resolved since: a
// redrive or discard took its snapshot of the dead letters while this
// projection was still parking the aggregate's next records. Such records
// decoded and need nothing but to flow; applying them here (in dead-letter
// order, through the same idempotent path as kappa dlq redrive) keeps
// their aggregate from staying parked until an operator looks again.
// Records of the aggregate that arrive meanwhile are parked behind them,
// since the book shows the aggregate open until they are marked, so order
// holds.
func (c *Consumer) redriveOrphans(ctx context.Context) {
	applier, ok := c.sink.(deadletter.Applier)
	if !ok {
		return
	}
	tick := time.NewTicker(orphanCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.book.Resolved():
		case <-tick.C:
		}
		for _, agg := range c.book.Orphaned() {
			// Only the member that owns the aggregate's partition redrives
			// it, so that two members never apply the same records.
			if e, ok := c.book.FirstOpen(agg); !ok || !c.owns(e.Origin.Partition) {
				continue
			}
			outcomes, err := deadletter.Redrive(ctx, c.client, c.cfg.DeadLetterTopic, c.book, deadletter.Filter{AggregateID: agg}, applier, false)
			if err != nil {
				if ctx.Err() == nil {
					c.log.Warn("redrive records parked behind a resolved entry; retrying later", "aggregate", agg, "err", err)
				}
				continue
			}
			if n := redriven(outcomes); n > 0 {
				c.log.Info("redrove records parked behind a resolved entry", "aggregate", agg, "records", n)
			}
		}
	}
}

func redriven(outcomes []deadletter.Outcome) int {
	n := 0
	for _, o := range outcomes {
		if o.Action == deadletter.ActionRedriven {
			n++
		}
	}
	return n
}
