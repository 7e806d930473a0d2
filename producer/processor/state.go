package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The state a processor decides from: its local store (store.go), kept
// current from the changelog topic, which every transaction writes with its
// events. A partition newly assigned is restored by reading the changelog
// from the store's checkpoint to its end: after a restart with the store
// kept, only the tail; with the store lost, the changelog, whose size
// follows the live aggregates because Kafka compacts it. A partition
// whose changelog holds no committed record predates the changelog: it is
// rebuilt once from the events (Rebuild), and the next transaction writes
// its whole state to the changelog.

// owned is the state of a partition this processor owns.
type owned struct {
	// cp is the partition's checkpoint as the store holds it.
	cp checkpoint
	// changed holds the aggregates the open transaction changed, by key,
	// and created those of them it created.
	changed map[string]aggregate.State
	created map[string]bool
	// bootstrap says the changelog lacks the partition's state; the next
	// transactions write it, a chunk each, from the store key after
	// bootstrapAfter (nil: from the first).
	bootstrap      bool
	bootstrapAfter []byte
	// eventsNext is the offset the next record of this processor on the
	// partition of the events topic will get, once a transaction of this
	// processor committed there (0 until then): the partition's commands
	// are only this processor's, so only it writes there, and a commit's
	// marker takes one offset.
	eventsNext int64
	// presence knows which aggregates the store certainly lacks.
	presence *presence
}

func newOwned(cp checkpoint) *owned {
	return &owned{cp: cp, changed: map[string]aggregate.State{}, created: map[string]bool{}, presence: &presence{}}
}

// aggregate returns an aggregate's current state: as the open transaction
// left it, else as the cache or the store holds it. Decisions change a
// cart's lines in place, so a cached state may hold changes of a
// transaction that then aborts; an abort therefore restores every
// partition, which first drops its entries from the cache.
func (p *Processor) aggregate(o *owned, part int32, key string) (aggregate.State, error) {
	if st, ok := o.changed[key]; ok {
		return st, nil
	}
	if st, ok := p.cache.get(cacheKey{part, key}); ok {
		return st, nil
	}
	if !o.presence.mayHold(key) {
		return aggregate.State{}, nil
	}
	p.storeReads++
	st, err := p.store.aggregate(part, key)
	if err == nil && st.Version > 0 {
		p.cache.put(cacheKey{part, key}, st)
	}
	return st, err
}

// uncache drops the cached states of the partitions.
func (p *Processor) uncache(parts []int32) {
	drop := map[int32]bool{}
	for _, part := range parts {
		drop[part] = true
	}
	p.cache.drop(drop)
}

// restoreMissing restores the state of every partition in records that
// is not restored yet.
func (p *Processor) restoreMissing(ctx context.Context, records []*kgo.Record) error {
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
	p.log.Info("restoring aggregate state", "partitions", missing)
	p.uncache(missing)
	restored, read, err := p.restore(ctx, missing)
	if err != nil {
		return err
	}
	maps.Copy(p.partitions, restored)
	for part, o := range restored {
		p.buildPresence(part, o)
	}
	if read >= restoreBatchRecords {
		// A large restore leaves the heap at several times what deciding
		// needs; hand it back now, not over the next minutes.
		debug.FreeOSMemory()
	}
	took := time.Since(start)
	var held int64
	for _, o := range p.partitions {
		held += o.cp.Aggregates
	}
	p.log.Info("restored aggregate state", "partitions", missing, "records", read, "took", took, "aggregates_held", held)
	p.cfg.Observer.Restored(read, took)
	p.reportHeld(0)
	return nil
}

// restore brings the store up to the changelog's end for the partitions
// and returns their state and the records read.
func (p *Processor) restore(ctx context.Context, parts []int32) (map[int32]*owned, int, error) {
	cl, err := p.cfg.Kafka.NewClient()
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	topic := p.cfg.Topics.State
	id, err := kafka.TopicID(ctx, cl, topic)
	if err != nil {
		return nil, 0, err
	}
	if err := p.store.forChangelog(id, p.log); err != nil {
		return nil, 0, err
	}
	ends, err := settledEnds(ctx, p.cfg.Kafka, topic, parts, p.log)
	if err != nil {
		return nil, 0, err
	}
	starts, err := kafka.StartOffsets(ctx, cl, topic)
	if err != nil {
		return nil, 0, err
	}
	restored := make(map[int32]*owned, len(parts))
	from := map[int32]int64{}
	for _, part := range parts {
		cp, cpErr := p.store.checkpoint(part)
		end, first := ends[part], starts[part]
		if cpErr != nil || cp.Next > end || cp.Next < first {
			// Unreadable, the store cannot be trusted; ahead of the
			// changelog, it holds another's state; behind its start,
			// records it never read are gone.
			p.log.Warn("the state store does not follow the changelog; restoring the partition from the changelog's start",
				"partition", part, "checkpoint", cp.Next, "changelog_start", first, "changelog_end", end, "err", cpErr)
			b := p.store.newBatch()
			if err := errors.Join(b.wipe(part), b.commit()); err != nil {
				return nil, 0, err
			}
			cp = checkpoint{Next: first}
		}
		if cp.Next == first && first < end {
			// From the start: nothing of the partition in the store to
			// look up, so the restore writes without counting, and counts
			// once at its end.
			cp.Aggregates = uncounted
		}
		restored[part] = newOwned(cp)
		if cp.Next < end {
			from[part] = cp.Next
		}
	}
	read, err := p.readChangelog(ctx, from, ends, restored)
	if err != nil {
		return nil, 0, err
	}
	if err := p.countRestored(restored); err != nil {
		return nil, 0, err
	}
	// A partition whose changelog holds no committed record predates it
	// (or its first transaction aborted): its state is in the events.
	var bootstrap []int32
	for _, part := range parts {
		if cp := restored[part].cp; !cp.Seeded || cp.Seeding {
			bootstrap = append(bootstrap, part)
		}
	}
	if len(bootstrap) > 0 {
		replayed, err := p.bootstrap(ctx, bootstrap, restored)
		if err != nil {
			return nil, 0, err
		}
		read += replayed
	}
	return restored, read, nil
}

// uncounted marks a checkpoint whose aggregates are not counted yet.
const uncounted = -1

// countRestored counts the aggregates of the partitions restored from the
// changelog's start and writes their checkpoints. Looking each record up
// to count it as it is restored took most of a restore's time; counting
// the keys at the end is one sequential pass.
func (p *Processor) countRestored(restored map[int32]*owned) error {
	b := p.store.newBatch()
	defer b.close()
	for part, o := range restored {
		if o.cp.Aggregates != uncounted {
			continue
		}
		n, err := p.store.countAggregates(part)
		if err != nil {
			return err
		}
		o.cp.Aggregates = n
		if err := b.setCheckpoint(part, o.cp); err != nil {
			return err
		}
	}
	return b.commit()
}

// restoreBatchRecords bounds the changes a restore holds before it writes
// them and a checkpoint to the store.
const restoreBatchRecords = 20000

// readChangelog applies the changelog's records from the given offsets up
// to ends to the store, and returns how many it read.
func (p *Processor) readChangelog(ctx context.Context, from, ends map[int32]int64, restored map[int32]*owned) (int, error) {
	if len(from) == 0 {
		return 0, nil
	}
	consume := map[int32]kgo.Offset{}
	for part, offset := range from {
		consume[part] = kgo.NewOffset().At(offset)
	}
	cl, err := p.cfg.Kafka.NewClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.cfg.Topics.State: consume}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The last record before the end may be a transaction marker;
		// without control records that partition would never end.
		kgo.KeepControlRecords(),
		// Small fetches: a restore is bounded by the broker's disk and
		// the store, not by round trips, and what a fetch holds
		// decompressed is the most a restore holds in memory.
		kgo.FetchMaxBytes(8<<20), kgo.FetchMaxPartitionBytes(2<<20),
	)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	remaining := maps.Clone(from)
	b := p.store.newBatch()
	defer func() { b.close() }()
	var read, pending int
	flush := func() error {
		for part := range restored {
			if err := b.setCheckpoint(part, restored[part].cp); err != nil {
				return err
			}
		}
		if err := b.commit(); err != nil {
			return err
		}
		b, pending = p.store.newBatch(), 0
		return nil
	}
	for len(remaining) > 0 {
		fetches := cl.PollRecords(ctx, restoreBatchRecords)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err := fetches.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			p.log.Warn("fetch the changelog for a restore", "err", err)
		}
		var applyErr error
		fetches.EachRecord(func(r *kgo.Record) {
			end := ends[r.Partition]
			if _, ok := remaining[r.Partition]; !ok || applyErr != nil || r.Offset >= end {
				return
			}
			o := restored[r.Partition]
			o.cp.Next = r.Offset + 1
			if o.cp.Next >= end {
				delete(remaining, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			read++
			pending++
			applyErr = applyChangelog(b, r.Partition, &o.cp, r.Key, r.Value)
		})
		if applyErr != nil {
			return 0, applyErr
		}
		if pending >= restoreBatchRecords || len(remaining) == 0 {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	return read, nil
}

// Changelog record keys: a kind byte, then the aggregate key or command id.
// A changelogMarker record is written by every transaction that writes the
// partition, so that its last offset always holds a record that compaction
// keeps (a transaction of tombstones only could otherwise vanish whole).
const changelogMarker = "m"

// A bootstrap too large for one transaction is written in chunks, one per
// transaction; its first writes a changelogSeeding record seedingBegun,
// its last one seedingEnded. Until then, the changelog holds part of the
// state only, and a restore rebuilds the partition from the events again.
const (
	changelogSeeding = "s"
	seedingBegun     = "begun"
	seedingEnded     = "ended"
)

// applyChangelog applies one changelog record to the store and counts it
// in the checkpoint.
func applyChangelog(b *storeBatch, part int32, cp *checkpoint, key, value []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("changelog partition %d: a record without a key", part)
	}
	cp.Seeded = true
	rest := string(key[1:])
	switch key[0] {
	case kindAggregate:
		if cp.Aggregates == uncounted {
			return b.b.Set(storeKey(kindAggregate, part, rest), value, nil)
		}
		added, err := b.setAggregate(part, rest, value)
		if added {
			cp.Aggregates++
		}
		return err
	case kindKeyed:
		if len(value) == 0 { // a tombstone
			gone, err := b.deleteKeyed(part, rest)
			if gone {
				cp.Keyed--
			}
			return err
		}
		added, err := b.setKeyed(part, rest, value)
		if added {
			cp.Keyed++
		}
		return err
	case changelogMarker[0]:
		return nil
	case changelogSeeding[0]:
		cp.Seeding = string(value) == seedingBegun
		return nil
	}
	return fmt.Errorf("changelog partition %d: unknown record kind %q", part, key[0])
}

// bootstrap rebuilds partitions whose changelog holds no committed record,
// or a bootstrap that did not end, from the events topic into the store,
// marks them for the next transactions to write their whole state, and
// returns the events replayed.
func (p *Processor) bootstrap(ctx context.Context, parts []int32, restored map[int32]*owned) (int, error) {
	replayed, events, err := Rebuild(ctx, p.cfg.Kafka, p.cfg.Topics.Events, parts, time.Now().Add(-p.cfg.IdempotencyWindow), p.log)
	if err != nil {
		return 0, err
	}
	if events > 0 {
		p.log.Info("the changelog lacks state the events topic holds; rebuilt it from the events, and the next transaction writes it",
			"partitions", parts, "events", events)
	}
	for part, r := range replayed {
		b := p.store.newBatch()
		cp := checkpoint{Next: restored[part].cp.Next}
		err := b.wipe(part)
		for key, st := range r.Aggregates {
			if err != nil {
				break
			}
			err = applyChangelog(b, part, &cp, changelogKey(kindAggregate, key), aggregate.MarshalState(nil, st))
		}
		for id, k := range r.Keyed {
			if err != nil {
				break
			}
			var v []byte
			if v, err = marshalKeyed(k); err == nil {
				err = applyChangelog(b, part, &cp, changelogKey(kindKeyed, id), v)
			}
		}
		// Not seeded until a transaction has written this state to the
		// changelog: if it aborts, or the processor dies first, the next
		// restore must rebuild it again rather than take the store's word.
		cp.Seeded = false
		if err == nil {
			err = b.setCheckpoint(part, cp)
		}
		if err != nil {
			b.close()
			return 0, err
		}
		if err := b.commit(); err != nil {
			return 0, err
		}
		restored[part] = newOwned(cp)
		restored[part].bootstrap = true
	}
	return events, nil
}

func changelogKey(kind byte, rest string) []byte {
	return append([]byte{kind}, rest...)
}

// Replayed is the state of one partition as Rebuild replays it from the
// events topic: its aggregates and the remembered outcomes of commands
// that carried an idempotency key.
type Replayed struct {
	Aggregates map[string]aggregate.State
	Keyed      map[string]KeyedOutcome // by command id
}

// KeyedOutcome is a remembered outcome and when it was decided.
type KeyedOutcome struct {
	Outcome   schemas.Outcome
	DecidedAt time.Time
}

// Rebuild replays the committed records of the given partitions of the
// events topic and returns each partition's state and the number of events
// replayed. Outcomes of keyed commands decided after keyedSince are
// remembered. Events that cannot be decoded are skipped with a warning:
// they were never written by a processor of this build.
func Rebuild(ctx context.Context, conn kafka.Connection, topic string, partitions []int32, keyedSince time.Time, log *slog.Logger) (map[int32]*Replayed, int, error) {
	result := make(map[int32]*Replayed, len(partitions))
	for _, part := range partitions {
		result[part] = &Replayed{Aggregates: map[string]aggregate.State{}, Keyed: map[string]KeyedOutcome{}}
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
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("partitions %v of %s still have an open transaction: %w", open, topic, ctx.Err())
		}
		backoff = min(backoff*2, time.Second)
	}
}
