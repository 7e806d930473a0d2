package projector

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// item is one polled record and what it decoded to. A record to park (it
// cannot be decoded, or waits behind a parked one) carries a
// schemas.Parked payload, so that the sink counts its position and applies
// nothing.
type item struct {
	raw *kgo.Record
	rec schemas.Record
	// undecodable says why raw could not be decoded; nil if it could.
	undecodable error
}

func newItem(r *kgo.Record) item {
	rec, err := kafka.Decode(r)
	if err != nil {
		rec = parkedRecord(r, err)
	}
	return item{raw: r, rec: rec, undecodable: err}
}

// parkedRecord is what the sink gets for a parked record: its position.
func parkedRecord(r *kgo.Record, reason error) schemas.Record {
	return schemas.Record{Topic: r.Topic, Position: kafka.Position(r), Payload: schemas.Parked{Reason: reason.Error()}}
}

func records(items []item) []schemas.Record {
	out := make([]schemas.Record, len(items))
	for i, it := range items {
		out[i] = it.rec
	}
	return out
}

func raws(items []item) []*kgo.Record {
	out := make([]*kgo.Record, len(items))
	for i, it := range items {
		out[i] = it.raw
	}
	return out
}

// prepared is a batch ready to flush: the records to park are Parked in
// items and listed in dead.
type prepared struct {
	items []item
	dead  []deadletter.Parking
}

// drainEvery bounds how long the pipeline keeps rebalances blocked under
// continuous load: past it, the batch in hand is applied without
// collecting the next one, and a pending rebalance can happen.
const drainEvery = 2 * time.Second

// loop collects the next batch while the sink applies the previous one, so
// decoding (this process's CPU) overlaps writing (the store's). A batch is
// only applied after the previous one succeeded, so order and positions
// are as if it were sequential. Rebalances stay blocked from the first poll
// that returns records until nothing is in flight or in hand.
func (p *Projector) loop(ctx context.Context, cl *kgo.Client) error {
	// Flushes outlive a shutdown by ShutdownTimeout, so that the batch in
	// flight is finished rather than cut off with a later one in hand.
	flushCtx, cancelFlushes := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlushes()
	stopShutdownTimer := context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.ShutdownTimeout, cancelFlushes) })
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
		col, err := p.collect(ctx, cl, idle)
		if blockedSince.IsZero() && len(col) > 0 {
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
			previous := inflight.items
			inflight = nil
			if errors.Is(err, errYield) {
				p.yield(cl, append(previous, col...))
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
			drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
			err := p.flush(drainCtx, cl, p.prepare(drainCtx, col), blockedSince)
			cancel()
			allow()
			if err != nil {
				p.log.Warn("flush on shutdown; the sink's positions make the rest redeliver", "records", len(col), "err", err)
			}
			return nil
		}
		if len(col) == 0 {
			allow() // the previous batch is applied and nothing is in hand
			continue
		}
		b := p.prepare(ctx, col)
		if time.Since(blockedSince) < drainEvery {
			inflight = p.startFlush(flushCtx, cl, b, blockedSince)
			continue
		}
		if err := p.flush(flushCtx, cl, b, blockedSince); err != nil {
			if errors.Is(err, errYield) {
				p.yield(cl, b.items)
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
func (p *Projector) yield(cl *kgo.Client, items []item) {
	p.log.Warn("the sink refused writes for too long; rewinding and letting a rebalance through", "records", len(items))
	cl.SetOffsets(rewindTo(items))
}

// rewindTo returns the first offset of each partition in items.
func rewindTo(items []item) map[string]map[int32]kgo.EpochOffset {
	to := map[string]map[int32]kgo.EpochOffset{}
	for _, it := range items {
		r := it.raw
		if to[r.Topic] == nil {
			to[r.Topic] = map[int32]kgo.EpochOffset{}
		}
		if o, ok := to[r.Topic][r.Partition]; !ok || r.Offset < o.Offset {
			to[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: -1, Offset: r.Offset}
		}
	}
	return to
}

// flushing is a batch being flushed in the background.
type flushing struct {
	items []item
	done  chan struct{}
	err   error
}

func (f *flushing) wait() error {
	<-f.done
	return f.err
}

func (p *Projector) startFlush(ctx context.Context, cl *kgo.Client, b prepared, blockedSince time.Time) *flushing {
	f := &flushing{items: b.items, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.err = p.flush(ctx, cl, b, blockedSince)
	}()
	return f
}

// flush parks the dead letters, applies the batch, and commits its offsets
// to Kafka for lag tooling.
func (p *Projector) flush(ctx context.Context, cl *kgo.Client, b prepared, blockedSince time.Time) error {
	if err := p.park(ctx, b.dead); err != nil {
		return err
	}
	batch := records(b.items)
	if err := p.apply(ctx, batch, b.items, blockedSince); err != nil {
		return err
	}
	if po, ok := p.cfg.Observer.(ParkObserver); ok {
		po.Parked(p.parker.Counts())
	}
	if po, ok := p.cfg.Observer.(ProgressObserver); ok {
		for part, o := range commandsThrough(batch) {
			po.CommandsThrough(part, o)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	polled := raws(b.items)
	for part, next := range nextOffsets(polled) {
		p.watch.Progressed(part, next)
	}
	if err := cl.CommitRecords(ctx, polled...); err != nil && ctx.Err() == nil {
		// The sink holds the truth; a failed commit only makes lag
		// tooling lag behind, so it is logged, not fatal.
		p.log.Warn("commit offsets to kafka", "err", err)
	}
	return nil
}

// collect polls and decodes until it has MaxBatchRecords, or until it has
// records, FlushInterval has passed since the first arrived, and the batch
// in flight (idle closes when it is applied) is done: while the store is
// busy, waiting longer costs no freshness and makes the next batch bigger.
// With nothing polled it returns when idle closes, or at once after a poll
// when nothing is in flight, so that a quiet topic does not hold
// rebalances back.
func (p *Projector) collect(ctx context.Context, cl *kgo.Client, idle <-chan struct{}) ([]item, error) {
	var col []item
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
	for len(col) < p.cfg.MaxBatchRecords {
		hasRecords := len(col) > 0
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
		fetches := cl.PollRecords(pollCtx, p.cfg.MaxBatchRecords-len(col))
		cancel()
		if ctx.Err() != nil {
			return col, ctx.Err()
		}
		if fetches.IsClientClosed() {
			return nil, errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch", "topic", topic, "partition", partition, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { col = append(col, newItem(r)) })
		if len(col) == 0 && !storeBusy() {
			// Nothing in hand and nothing in flight: return, so that
			// the loop lets a pending rebalance through. A poll that
			// brings only an error (the group could not be joined
			// while the broker was away) still blocks rebalances until
			// then; polling on here kept a member from ever rejoining.
			return col, nil
		}
		if deadline.IsZero() && len(col) > 0 {
			deadline = time.Now().Add(p.cfg.FlushInterval)
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
