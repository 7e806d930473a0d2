package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The state a processor decides from, and its rebuild from the events
// topic.

// rebuildMissing replays the events topic for every partition in records
// whose state is not in memory.
func (p *Processor) rebuildMissing(ctx context.Context, records []*kgo.Record) error {
	var missing []int32
	seen := map[int32]bool{}
	for _, r := range records {
		if _, ok := p.partitions[r.Partition]; !ok && !seen[r.Partition] {
			seen[r.Partition] = true
			missing = append(missing, r.Partition)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	start := time.Now()
	rebuilt, events, err := Rebuild(ctx, p.cfg.Kafka, p.cfg.Topics.Events, missing, time.Now().Add(-p.cfg.IdempotencyWindow), p.log)
	if err != nil {
		return err
	}
	for part, state := range rebuilt {
		for key, st := range state.Aggregates {
			state.bytes += heldBytes(key, st)
		}
		p.partitions[part] = state
	}
	took := time.Since(start)
	p.log.Info("rebuilt aggregate state", "partitions", missing, "events", events, "took", took)
	p.cfg.Observer.Restored(events, took)
	p.reportHeld()
	return nil
}

// Partition is the processor's state of one partition: its aggregates and
// the remembered outcomes of commands that carried an idempotency key.
type Partition struct {
	// Aggregates holds states by value: a processor keeps every aggregate
	// it owns, and the garbage collector scans them all on every cycle.
	Aggregates map[string]aggregate.State
	Keyed      map[string]KeyedOutcome // by command id
	// bytes estimates the memory Aggregates holds (heldBytes).
	bytes int64
}

// heldAggregateOverhead estimates what a map entry costs beyond its key
// and its state: the key's string header, the bucket's share and the
// state's own fields.
const heldAggregateOverhead = 16 + 16 + 24

// heldBytes estimates the memory of one aggregate in Aggregates.
func heldBytes(key string, st aggregate.State) int64 {
	return int64(len(key)) + heldAggregateOverhead + aggregate.SizeOf(st)
}

// KeyedOutcome is a remembered outcome and when it was decided.
type KeyedOutcome struct {
	Outcome   schemas.Outcome
	DecidedAt time.Time
}

func newPartition() *Partition {
	return &Partition{Aggregates: map[string]aggregate.State{}, Keyed: map[string]KeyedOutcome{}}
}

// remember keeps an outcome for the window, and drops expired ones from
// time to time so that memory follows the window, not the history.
func (p *Partition) remember(o schemas.Outcome, at time.Time, window time.Duration) {
	p.Keyed[o.CommandID] = KeyedOutcome{Outcome: o, DecidedAt: at}
	if len(p.Keyed)%1024 == 0 {
		for id, k := range p.Keyed {
			if at.Sub(k.DecidedAt) > window {
				delete(p.Keyed, id)
			}
		}
	}
}

// Rebuild replays the committed records of the given partitions of the
// events topic and returns each partition's state and the number of events
// replayed. Outcomes of keyed commands decided after keyedSince are
// remembered. Events that cannot be decoded are skipped with a warning:
// they were never written by a processor of this build.
func Rebuild(ctx context.Context, conn kafka.Connection, topic string, partitions []int32, keyedSince time.Time, log *slog.Logger) (map[int32]*Partition, int, error) {
	result := make(map[int32]*Partition, len(partitions))
	for _, part := range partitions {
		result[part] = newPartition()
	}
	ends, err := settledEnds(ctx, conn, topic, partitions, log)
	if err != nil {
		return nil, 0, err
	}
	remaining := map[int32]int64{} // partition -> end offset still to reach
	consume := map[int32]kgo.Offset{}
	for part, end := range ends {
		if end > 0 {
			remaining[part] = end
			consume[part] = kgo.NewOffset().AtStart()
		}
	}
	if len(remaining) == 0 {
		return result, 0, nil
	}
	cl, err := conn.NewClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records carry the offsets of transaction markers; without
		// them a partition ending in a marker would never look finished.
		kgo.KeepControlRecords(),
	)
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	var count int
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if err := fetches.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("fetch events for rebuild", "err", err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok {
				return
			}
			if r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
			if r.Offset >= end || r.Attrs.IsControl() {
				return
			}
			env, err := kafka.Envelope(r)
			if err != nil {
				return
			}
			if env.Type == schemas.OutcomeType {
				if o, err := schemas.DecodeOutcome(env.Data); err == nil && o.IdempotencyKey != "" && o.DuplicateOf == nil && env.Time.After(keyedSince) {
					result[r.Partition].Keyed[o.CommandID] = KeyedOutcome{Outcome: o, DecidedAt: env.Time}
				}
				return
			}
			event, err := schemas.DecodeEvent(env)
			if err != nil {
				log.Warn("skip undecodable event in rebuild", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			aggregates := result[r.Partition].Aggregates
			key := schemas.KeyOf(env)
			st := aggregates[key]
			aggregate.Apply(&st, event)
			aggregate.Retire(&st)
			aggregates[key] = st
			count++
		})
	}
	return result, count, nil
}

// settledEnds waits until no transaction is open on the partitions and
// returns their end offsets. While a transaction is open, read_committed
// readers stop at its first offset (the last stable offset) and do not see
// transactions committed after it; a rebuild that stopped there would miss
// events and decide from stale state. On a partition this processor has
// just been assigned, an open transaction belongs to a predecessor that
// died: it ends when that predecessor restarts under the same
// transactional id (fenced) or when the transaction times out (aborted).
func settledEnds(ctx context.Context, conn kafka.Connection, topic string, partitions []int32, log *slog.Logger) (map[int32]int64, error) {
	cl, err := conn.NewClient()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	backoff := 50 * time.Millisecond
	for {
		stable, err := kafka.StableOffsets(ctx, cl, topic)
		if err != nil {
			return nil, err
		}
		high, err := kafka.EndOffsets(ctx, cl, topic)
		if err != nil {
			return nil, err
		}
		ends := make(map[int32]int64, len(partitions))
		var open []int32
		for _, part := range partitions {
			s, okS := stable[part]
			h, okH := high[part]
			if !okS || !okH {
				return nil, fmt.Errorf("end offsets of %s/%d: the partition is not listed", topic, part)
			}
			if s < h {
				open = append(open, part)
			}
			ends[part] = s
		}
		if len(open) == 0 {
			return ends, nil
		}
		log.Info("waiting for an abandoned transaction to end before rebuilding", "topic", topic, "partitions", open)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("partitions %v of %s still have an open transaction: %w", open, topic, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, time.Second)
	}
}
