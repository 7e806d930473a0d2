package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/schemas"
)

// apply writes the batch, retrying with capped exponential backoff and full
// jitter until it succeeds or ctx ends: a sink outage blocks, never drops.
func (c *Consumer) apply(ctx context.Context, batch []schemas.Record, raws []*kgo.Record, blockedSince time.Time) error {
	if len(batch) == 0 {
		return nil
	}
	start := time.Now()
	retry := newBackoff(100*time.Millisecond, c.cfg.MaxRetryBackoff)
	for attempt := 1; ; attempt++ {
		err := c.sink.Apply(ctx, batch)
		if err == nil {
			c.healthy.Store(true)
			c.applied.Add(int64(len(batch)))
			c.cfg.Observer.BatchApplied(len(batch), time.Since(start), newestEvent(batch))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.fenced(err) {
			return fmt.Errorf("%w: %w", errFenced, err)
		}
		if c.permanent(err) && attempt >= c.cfg.PoisonAttempts {
			c.log.Warn("the sink refuses the batch for its contents; applying record by record to park the culprit", "records", len(batch), "err", err)
			if err := c.isolate(ctx, batch, raws, blockedSince); err != nil {
				return err
			}
			c.healthy.Store(true)
			c.cfg.Observer.BatchApplied(len(batch), time.Since(start), newestEvent(batch))
			return nil
		}
		c.healthy.Store(false)
		c.cfg.Observer.BatchFailed(err)
		if time.Since(blockedSince) > c.cfg.MaxBlock {
			return errYield
		}
		c.log.Error("apply batch; retrying", "records", len(batch), "attempt", attempt, "retry_in", retry.next, "err", err)
		if err := retry.wait(ctx); err != nil {
			return err
		}
	}
}

// errFenced ends a membership: the sink shut this member's writes out.
var errFenced = errors.New("fenced off by the sink")

func (c *Consumer) fenced(err error) bool {
	f, ok := c.sink.(Fencer)
	return ok && f.Fenced(err)
}

// backoff is the one retry policy of the consumer: capped exponential
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
	return sleep(ctx, d)
}

// errYield asks Run to rewind and let rebalances through.
var errYield = errors.New("yield to a rebalance")

// rewindTo returns the first offset of each partition in raws.
func rewindTo(raws []*kgo.Record) map[string]map[int32]kgo.EpochOffset {
	to := map[string]map[int32]kgo.EpochOffset{}
	for _, r := range raws {
		if to[r.Topic] == nil {
			to[r.Topic] = map[int32]kgo.EpochOffset{}
		}
		if o, ok := to[r.Topic][r.Partition]; !ok || r.Offset < o.Offset {
			to[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: -1, Offset: r.Offset}
		}
	}
	return to
}

// PermanentClassifier is an optional interface of a Sink: Permanent says
// whether an Apply error is caused by the records themselves (a constraint
// violation, a value the store refuses), so that retrying cannot help.
type PermanentClassifier interface {
	Permanent(err error) bool
}

func (c *Consumer) permanent(err error) bool {
	pc, ok := c.sink.(PermanentClassifier)
	return ok && pc.Permanent(err)
}

// isolate applies a refused batch one record at a time. A record the sink
// refuses for its contents PoisonAttempts times is parked, and so is every
// later record of its aggregate; other records are applied as usual, and
// transient errors are retried as ever.
func (c *Consumer) isolate(ctx context.Context, batch []schemas.Record, raws []*kgo.Record, blockedSince time.Time) error {
	parkedHere := map[string]string{} // aggregate -> origin position of its first parked record
	for i, r := range batch {
		raw := raws[i]
		aggregate := string(raw.Key)
		placeholder := schemas.Record{Topic: r.Topic, Position: r.Position}
		if r.Payload != nil && r.Envelope.Type != schemas.OutcomeType {
			if behind, ok := parkedHere[aggregate]; ok {
				err := fmt.Errorf("%w: aggregate %s waits behind the record parked at %s", ErrParkedBehind, aggregate, behind)
				if err := c.deadLetter(ctx, []deadLetter{{record: raw, reason: err, behind: behind, attempts: 1}}); err != nil {
					return err
				}
				r = placeholder
			}
		}
		retry := newBackoff(100*time.Millisecond, c.cfg.MaxRetryBackoff)
		for attempt := 1; ; attempt++ {
			err := c.sink.Apply(ctx, []schemas.Record{r})
			if err == nil {
				c.applied.Add(1)
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if c.fenced(err) {
				return fmt.Errorf("%w: %w", errFenced, err)
			}
			if c.permanent(err) && attempt >= c.cfg.PoisonAttempts {
				if err := c.deadLetter(ctx, []deadLetter{{record: raw, reason: err, attempts: attempt}}); err != nil {
					return err
				}
				if _, ok := parkedHere[aggregate]; !ok {
					parkedHere[aggregate] = r.Position.String()
				}
				r = placeholder // still applied, so that the position moves past it
				continue
			}
			c.cfg.Observer.BatchFailed(err)
			if time.Since(blockedSince) > c.cfg.MaxBlock {
				return errYield
			}
			c.log.Error("apply record; retrying", "topic", r.Topic, "partition", r.Position.Partition, "offset", r.Position.Offset, "attempt", attempt, "err", err)
			if err := retry.wait(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
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
