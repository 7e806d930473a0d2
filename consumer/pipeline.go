package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// drainEvery bounds how long the pipeline keeps rebalances blocked under
// continuous load: past it, the batch in hand is applied without
// collecting the next one, and a pending rebalance can happen.
const drainEvery = 2 * time.Second

// loop collects the next batch while the sink applies the previous one, so
// decoding (this process's CPU) overlaps writing (the store's). A batch is
// only applied after the previous one succeeded, so order and positions
// are as if it were sequential. Rebalances stay blocked from the first poll
// that returns records until nothing is in flight or in hand.
func (c *Consumer) loop(ctx context.Context, cl *kgo.Client) error {
	// Flushes outlive a shutdown by ShutdownTimeout, so that the batch in
	// flight is finished rather than cut off with a later one in hand.
	flushCtx, cancelFlushes := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlushes()
	stopShutdownTimer := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.ShutdownTimeout, cancelFlushes) })
	defer stopShutdownTimer()

	var (
		inflight     *flushing
		blockedSince time.Time // zero while rebalances are allowed
	)
	allow := func() {
		cl.AllowRebalance()
		blockedSince = time.Time{}
	}
	for {
		var idle <-chan struct{}
		if inflight != nil {
			idle = inflight.done
		}
		col, err := c.collect(ctx, cl, idle)
		if blockedSince.IsZero() && len(col.raws) > 0 {
			blockedSince = time.Now()
		}
		if err != nil && ctx.Err() == nil {
			if inflight != nil {
				_ = inflight.wait()
			}
			allow()
			return err
		}
		if inflight != nil {
			// The previous batch must have been applied before anything
			// is done with this one.
			err := inflight.wait()
			previous := inflight.raws
			inflight = nil
			if errors.Is(err, errYield) {
				c.yield(cl, append(previous, col.raws...))
				allow()
				continue
			}
			if err != nil {
				allow()
				return nilOnCancel(ctx, err)
			}
		}
		if ctx.Err() != nil {
			// Shutting down: flush what was collected, with a deadline of
			// its own, so that a restart redoes nothing.
			drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
			err := c.flush(drainCtx, cl, c.prepare(drainCtx, col), blockedSince)
			cancel()
			allow()
			if err != nil {
				c.log.Warn("flush on shutdown; the sink's positions make the rest redeliver", "records", len(col.batch), "err", err)
			}
			return nil
		}
		if len(col.raws) == 0 {
			allow() // the previous batch is applied and nothing is in hand
			continue
		}
		b := c.prepare(ctx, col)
		if time.Since(blockedSince) < drainEvery {
			inflight = c.startFlush(flushCtx, cl, b, blockedSince)
			continue
		}
		if err := c.flush(flushCtx, cl, b, blockedSince); err != nil {
			if errors.Is(err, errYield) {
				c.yield(cl, b.raws)
				allow()
				continue
			}
			allow()
			return nilOnCancel(ctx, err)
		}
		allow()
	}
}

// yield rewinds to the first of the records in hand, so that they are
// fetched again, after a rebalance if one is pending.
func (c *Consumer) yield(cl *kgo.Client, raws []*kgo.Record) {
	c.log.Warn("the sink refused writes for too long; rewinding and letting a rebalance through", "records", len(raws))
	cl.SetOffsets(rewindTo(raws))
}

// flushing is a batch being flushed in the background.
type flushing struct {
	raws []*kgo.Record
	done chan struct{}
	err  error
}

func (f *flushing) wait() error {
	<-f.done
	return f.err
}

func (c *Consumer) startFlush(ctx context.Context, cl *kgo.Client, b prepared, blockedSince time.Time) *flushing {
	f := &flushing{raws: b.raws, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.err = c.flush(ctx, cl, b, blockedSince)
	}()
	return f
}

// flush parks the dead letters, applies the batch, and commits its offsets
// to Kafka for lag tooling.
func (c *Consumer) flush(ctx context.Context, cl *kgo.Client, b prepared, blockedSince time.Time) error {
	batch, raws := b.batch, b.raws
	if err := c.deadLetter(ctx, b.dead); err != nil {
		return err
	}
	if err := c.apply(ctx, batch, raws, blockedSince); err != nil {
		return err
	}
	if po, ok := c.cfg.Observer.(ParkObserver); ok {
		po.Parked(c.book.Counts())
	}
	if po, ok := c.cfg.Observer.(ProgressObserver); ok {
		for p, o := range commandsThrough(batch) {
			po.CommandsThrough(p, o)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	for p, next := range nextOffsets(raws) {
		c.watch.Progressed(p, next)
	}
	if err := cl.CommitRecords(ctx, raws...); err != nil && ctx.Err() == nil {
		// The sink holds the truth; a failed commit only makes lag
		// tooling lag behind, so it is logged, not fatal.
		c.log.Warn("commit offsets to kafka", "err", err)
	}
	return nil
}

// collected is a polled batch, decoded.
type collected struct {
	batch       []schemas.Record
	raws        []*kgo.Record
	undecodable map[int]error // index in batch -> why it cannot be decoded
}

// prepared is a batch ready to flush: records to park are placeholders in
// batch (only their positions count) and listed in dead.
type prepared struct {
	batch []schemas.Record
	raws  []*kgo.Record
	dead  []deadLetter
}

// collect polls and decodes until it has MaxBatchRecords, or until it has
// records, FlushInterval has passed since the first arrived, and the batch
// in flight (idle closes when it is applied) is done: while the store is
// busy, waiting longer costs no freshness and makes the next batch bigger.
// With nothing polled it returns when idle closes, or at once after a poll
// when nothing is in flight, so that a quiet topic does not hold
// rebalances back.
func (c *Consumer) collect(ctx context.Context, cl *kgo.Client, idle <-chan struct{}) (collected, error) {
	col := collected{undecodable: map[int]error{}}
	var deadline time.Time
	storeBusy := func() bool {
		if idle == nil {
			return false
		}
		select {
		case <-idle:
			return false
		default:
			return true
		}
	}
	for len(col.batch) < c.cfg.MaxBatchRecords {
		hasRecords := len(col.batch) > 0
		if hasRecords && !time.Now().Before(deadline) && !storeBusy() {
			break
		}
		// Poll until the deadline while it is ahead; after it (or before
		// the first record), until the batch in flight is applied.
		var pollCtx context.Context
		var cancel context.CancelFunc
		beforeDeadline := hasRecords && time.Now().Before(deadline)
		if beforeDeadline {
			pollCtx, cancel = context.WithDeadline(ctx, deadline)
		} else {
			pollCtx, cancel = context.WithCancel(ctx)
		}
		if idle != nil && !beforeDeadline {
			go func() {
				select {
				case <-idle:
					cancel()
				case <-pollCtx.Done():
				}
			}()
		}
		fetches := cl.PollRecords(pollCtx, c.cfg.MaxBatchRecords-len(col.batch))
		cancel()
		if ctx.Err() != nil {
			return col, ctx.Err()
		}
		if fetches.IsClientClosed() {
			return collected{}, errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				c.log.Warn("fetch", "topic", topic, "partition", partition, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			rec, err := kafka.Decode(r)
			if err != nil {
				col.undecodable[len(col.batch)] = err
				rec = schemas.Record{Topic: r.Topic, Position: kafka.Position(r)}
			}
			col.batch = append(col.batch, rec)
			col.raws = append(col.raws, r)
		})
		if len(col.batch) == 0 && !storeBusy() {
			// Nothing in hand and nothing in flight: return, so that
			// the loop lets a pending rebalance through. A poll that
			// brings only an error (the group could not be joined
			// while the broker was away) still blocks rebalances until
			// then; polling on here kept a member from ever rejoining.
			return col, nil
		}
		if deadline.IsZero() && len(col.batch) > 0 {
			deadline = time.Now().Add(c.cfg.FlushInterval)
		}
	}
	return col, nil
}

// nextOffsets returns, per partition, the offset after the last of raws.
func nextOffsets(raws []*kgo.Record) map[int32]int64 {
	next := map[int32]int64{}
	for _, r := range raws {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	return next
}
