package projector

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kappa-cqrs/kappa/schemas"
)

// apply writes the batch (items' records), retrying with the one retry
// policy until it succeeds or ctx ends: a sink outage blocks, never drops.
// A batch the sink refuses for its contents is isolated record by record.
func (p *Projector) apply(ctx context.Context, batch []schemas.Record, items []item, blockedSince time.Time) error {
	if len(batch) == 0 {
		return nil
	}
	start := time.Now()
	retry := newBackoff(100*time.Millisecond, p.cfg.MaxRetryBackoff)
	for attempt := 1; ; attempt++ {
		err := p.sink.Apply(ctx, batch)
		if err == nil {
			p.healthy.Store(true)
			p.applied.Add(int64(len(batch)))
			p.cfg.Observer.BatchApplied(len(batch), time.Since(start), newestEvent(batch))
			return nil
		}
		if err := p.giveUp(ctx, err); err != nil {
			return err
		}
		if p.permanent(err) && attempt >= p.cfg.PoisonAttempts {
			p.log.Warn("the sink refuses the batch for its contents; applying record by record to park the culprit", "records", len(batch), "err", err)
			if err := p.isolate(ctx, items, blockedSince); err != nil {
				return err
			}
			p.healthy.Store(true)
			p.cfg.Observer.BatchApplied(len(batch), time.Since(start), newestEvent(batch))
			return nil
		}
		p.healthy.Store(false)
		p.cfg.Observer.BatchFailed(err)
		if time.Since(blockedSince) > p.cfg.MaxBlock {
			return errYield
		}
		p.log.Error("apply batch; retrying", "records", len(batch), "attempt", attempt, "retry_in", retry.next, "err", err)
		if err := retry.wait(ctx); err != nil {
			return err
		}
	}
}

// giveUp returns the error that ends the attempts at a write that failed
// with err, or nil if it may be tried again: none once ctx has ended, and
// none for a member the sink fenced off.
func (p *Projector) giveUp(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f, ok := p.sink.(Fencer); ok && f.Fenced(err) {
		return fmt.Errorf("%w: %w", errFenced, err)
	}
	return nil
}

func (p *Projector) permanent(err error) bool {
	pc, ok := p.sink.(PermanentClassifier)
	return ok && pc.Permanent(err)
}

// errFenced ends a membership: the sink shut this member's writes out.
var errFenced = errors.New("fenced off by the sink")

// errYield asks the loop to rewind and let rebalances through.
var errYield = errors.New("yield to a rebalance")

// backoff is the one retry policy of the projector: capped exponential
// backoff with full jitter.
type backoff struct {
	next, max time.Duration
}

func newBackoff(first, maxWait time.Duration) *backoff {
	return &backoff{next: first, max: max(first, maxWait)}
}

// wait sleeps a random time up to the current step, then doubles the step.
func (b *backoff) wait(ctx context.Context) error {
	d := time.Duration(rand.Int64N(int64(b.next))) + time.Millisecond
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func nilOnCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil //nolint:nilerr // shutting down is not a failure
	}
	return err
}
