package processor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Deciding: one transaction of commands, their events and outcomes.

// transact decides records in one transaction and, if it commits, makes
// the new state the committed one.
func (p *Processor) transact(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record) error {
	began := time.Now()
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	staged, err := p.decideBatch(ctx, sess, records)
	switch {
	case errors.Is(err, errMispredicted):
		p.log.Warn("aborting transaction", "err", err)
	case err != nil:
		p.log.Error("produce decisions; aborting transaction", "err", err)
	}
	decided := time.Now()
	committed, endErr := sess.End(ctx, kgo.TransactionEndTry(err == nil))
	if took := time.Since(began); took > slowTransaction {
		// Every decision of the batch waits for this; it shows in both
		// projections' freshness at once.
		p.log.Warn("slow transaction", "commands", len(records), "took", took,
			"decide_and_produce", decided.Sub(began), "end", time.Since(decided))
	}
	if endErr != nil || !committed {
		// The decisions changed the state in memory as they were made; it
		// is only right if they were committed, so drop all of it. The
		// session rewinds to the last committed offsets, and the next
		// batch restores state from the store and the changelog's tail
		// (the store only ever holds committed state).
		p.partitions = map[int32]*owned{}
	}
	if endErr != nil {
		return fmt.Errorf("end transaction: %w", endErr)
	}
	if !committed {
		p.log.Info("transaction aborted; commands will be redecided", "commands", len(records))
		p.cfg.Observer.Aborted()
		return nil
	}
	now := time.Now()
	tx := Transaction{Accepted: staged.accepted, Rejected: staged.rejected, Duplicates: staged.duplicates,
		Took: now.Sub(began), StoreReads: p.storeReads, Decided: make([]time.Duration, len(records))}
	p.storeReads = 0
	for i, r := range records {
		tx.Decided[i] = now.Sub(r.Timestamp)
	}
	p.cfg.Observer.Committed(tx)
	for part, last := range staged.eventsLast {
		if o, ok := p.partitions[part]; ok {
			o.eventsNext = last + 2 // the commit's marker follows the last record
		}
	}
	for part, next := range nextOffsets(records) {
		p.watch.Progressed(part, next)
	}
	inMemory := 0
	for _, o := range p.partitions {
		inMemory += len(o.changed)
	}
	if err := p.storeCommitted(staged); err != nil {
		// The changelog has what the store missed: restore from it.
		p.log.Error("write committed state to the state store; restoring from the changelog", "err", err)
		p.partitions = map[int32]*owned{}
	}
	p.reportHeld(inMemory)
	return nil
}

// storeCommitted writes what a committed transaction changed to the store,
// with each partition's new checkpoint, and ends the transaction's state
// in memory.
func (p *Processor) storeCommitted(staged *stagedChanges) error {
	b := p.store.newBatch()
	defer b.close()
	for _, w := range staged.changelog {
		o, ok := p.partitions[w.partition]
		if !ok {
			return fmt.Errorf("partition %d is no longer restored", w.partition)
		}
		if err := applyCommitted(b, w, &o.cp); err != nil {
			return err
		}
	}
	for part, next := range staged.changelogNext {
		o := p.partitions[part]
		o.cp.Next, o.cp.Seeded = next, true
		if err := b.setCheckpoint(part, o.cp); err != nil {
			return err
		}
	}
	if err := b.commit(); err != nil {
		return err
	}
	for part := range staged.changelogNext {
		o := p.partitions[part]
		if after, ok := staged.bootstrapAfter[part]; ok {
			o.bootstrap, o.bootstrapAfter = after != nil, after
		}
		for key, st := range o.changed {
			p.cache.put(cacheKey{part, key}, st)
		}
		o.presence.stored(o.created)
		p.buildPresence(part, o)
		clear(o.changed)
		clear(o.created)
	}
	return nil
}

// reportHeld tells the observer what state is held.
func (p *Processor) reportHeld(inMemory int) {
	h := Held{InMemory: inMemory, MemoryBytes: p.store.memoryBytes()}
	for _, o := range p.partitions {
		h.Aggregates += o.cp.Aggregates
		h.Keyed += o.cp.Keyed
		h.MemoryBytes += o.presence.memoryBytes()
	}
	p.cfg.Observer.Held(h)
}

// keyedCommand names a command that carried an idempotency key.
type keyedCommand struct {
	partition int32
	commandID string
}

// processorLinger only matters when a batch outgrows the producer's buffer
// before its Flush; it bounds how long records then wait.
const processorLinger = 100 * time.Millisecond

// stagedChanges are the outcomes and counts of one transaction; the
// outcomes of keyed commands are remembered only if it commits.
type stagedChanges struct {
	keyed map[keyedCommand]*schemas.Outcome
	// changelog holds the changelog records the transaction wrote, to
	// apply to the store once it commits, and changelogNext the offset
	// after each partition's last one.
	changelog     []changelogRecord
	changelogNext map[int32]int64
	// bootstrapAfter is where the next chunk of a bootstrap begins, per
	// partition that wrote one (nil: it wrote the last).
	bootstrapAfter map[int32][]byte
	// eventsLast is the offset of the last record on each partition of
	// the events topic.
	eventsLast map[int32]int64

	accepted, rejected, duplicates int
}

// changelogRecord is one record of the changelog topic.
type changelogRecord struct {
	partition  int32
	key, value []byte
	// created says an aggregate's record is its first: the store has no
	// state of it to look up.
	created bool
}

// applyCommitted applies a record of a committed transaction to the
// store. An aggregate's record needs no look-up: the transaction knows
// whether it created the aggregate.
func applyCommitted(b *storeBatch, r changelogRecord, cp *checkpoint) error {
	if len(r.key) == 0 || r.key[0] != kindAggregate {
		return applyChangelog(b, r.partition, cp, r.key, r.value)
	}
	if r.created {
		cp.Aggregates++
	}
	// Set copies the key: the batch's scratch buffer can hold the next.
	b.scratch = appendStoreKey(b.scratch[:0], kindAggregate, r.partition, r.key[1:])
	return b.b.Set(b.scratch, r.value, nil)
}

// decided returns the outcome of a command with an idempotency key decided
// in this transaction or remembered from earlier ones within the window.
func (p *Processor) decided(staged *stagedChanges, partition int32, commandID string, now time.Time) (schemas.Outcome, bool, error) {
	if o, ok := staged.keyed[keyedCommand{partition, commandID}]; ok {
		return *o, true, nil
	}
	k, ok, err := p.store.keyed(partition, commandID)
	if err != nil || !ok || now.Sub(k.DecidedAt) > p.cfg.IdempotencyWindow {
		return schemas.Outcome{}, false, err
	}
	return k.Outcome, true, nil
}

// producedEvent is a record written to the events topic in a
// transaction: where the prediction put it, and the position in an
// outcome that names it, if one does.
type producedEvent struct {
	record    *kgo.Record
	ref       *schemas.Position
	predicted int64
}

type pendingOutcome struct {
	record  *kgo.Record
	key     string // the aggregate's: its record's key
	outcome schemas.Outcome
	version int64
}

// decideBatch decides every command in order and produces events and
// outcomes inside the open transaction. Each decision changes the
// aggregate's in-memory state at once (copying every touched state first
// cost a tenth of the processor's CPU); transact drops all state unless the
// transaction commits.
func (p *Processor) decideBatch(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record) (*stagedChanges, error) {
	staged := &stagedChanges{keyed: map[keyedCommand]*schemas.Outcome{}, changelogNext: map[int32]int64{},
		bootstrapAfter: map[int32][]byte{}, eventsLast: map[int32]int64{}}
	// A transaction that failed before its flush may have left its
	// records with the producer.
	p.records.Forget()
	outcomes := make([]*pendingOutcome, 0, len(records))
	var (
		produceMu  sync.Mutex
		produceErr error
		produced   []producedEvent
	)
	predicted := p.eventOffsets(records)
	// One promise for every record of the events topic, and one for the
	// changelog's: a promise per record was an allocation per record.
	promise := func(written func(*kgo.Record)) func(*kgo.Record, error) {
		return func(rec *kgo.Record, err error) {
			produceMu.Lock()
			defer produceMu.Unlock()
			if err != nil {
				produceErr = errors.Join(produceErr, err)
				return
			}
			written(rec)
		}
	}
	onEvent := promise(func(rec *kgo.Record) {
		staged.eventsLast[rec.Partition] = max(staged.eventsLast[rec.Partition], rec.Offset)
	})
	onChangelog := promise(func(rec *kgo.Record) {
		staged.changelogNext[rec.Partition] = max(staged.changelogNext[rec.Partition], rec.Offset+1)
	})
	// produceEvent writes a record to the events topic; ref, if not nil,
	// is where an outcome says it is: predicted, it is checked once the
	// records are written, else it is filled in then.
	produceEvent := func(rec *kgo.Record, ref *schemas.Position) {
		e := producedEvent{record: rec, ref: ref}
		if predicted != nil {
			e.predicted = predicted[rec.Partition]
			predicted[rec.Partition]++
			if ref != nil {
				*ref = schemas.Position{Partition: rec.Partition, Offset: e.predicted}
			}
		}
		produced = append(produced, e)
		sess.Produce(ctx, rec, onEvent)
	}
	now := time.Now().UTC()
	for _, r := range records {
		env, cmd, decodeErr := decodeCommand(r)
		// An aggregate is its tenant's: the same id in two tenants is two
		// aggregates with their own state. A decoded command's record key
		// is this key; KeyOf spares converting it for the default tenant.
		key := schemas.KeyOf(env)
		if decodeErr != nil {
			key = string(r.Key)
		}
		out := &pendingOutcome{record: r, key: key, outcome: schemas.Outcome{
			CommandID:       env.ID,
			CommandType:     env.Type,
			AggregateID:     key,
			CommandPosition: kafka.Position(r),
		}}
		outcomes = append(outcomes, out)
		if decodeErr != nil {
			out.outcome.Status = schemas.StatusRejected
			staged.rejected++
			out.outcome.Rejection = &schemas.Rejection{Code: aggregate.CodeUndecodableCommand, Detail: decodeErr.Error()}
			continue
		}
		part, ok := p.partitions[r.Partition]
		if !ok {
			return nil, fmt.Errorf("no state for partition %d: it was not restored", r.Partition)
		}
		// A copy, stored back only once it has events: refusals of
		// commands to unknown ids must not fill the store.
		st, err := p.aggregate(part, r.Partition, key)
		if err != nil {
			return nil, err
		}
		out.outcome.IdempotencyKey = env.IdempotencyKey
		if env.IdempotencyKey != "" {
			original, ok, err := p.decided(staged, r.Partition, env.ID, now)
			if err != nil {
				return nil, err
			}
			if ok {
				// A retry: repeat the original outcome, decide nothing.
				// Like a rejection, its outcome carries the version the
				// aggregate is at.
				out.outcome = original
				out.outcome.CommandPosition = kafka.Position(r)
				out.outcome.DuplicateOf = &original.CommandPosition
				out.version = st.Version
				staged.duplicates++
				continue
			}
			// Filled in as the command is decided and its events produced.
			staged.keyed[keyedCommand{r.Partition, env.ID}] = &out.outcome
		}
		var events []any
		rejection := versionConflict(env, st.Version)
		if rejection == nil {
			events, rejection = aggregate.Decide(&st, env.AggregateID, cmd)
		}
		if rejection != nil {
			out.outcome.Status = schemas.StatusRejected
			out.outcome.Rejection = rejection
			out.version = st.Version
			staged.rejected++
			continue
		}
		out.outcome.Status = schemas.StatusAccepted
		staged.accepted++
		out.outcome.Events = make([]schemas.EventRef, len(events))
		for i, e := range events {
			aggregate.Apply(&st, e)
			ev := schemas.Envelope{
				ID:               eventID(env.ID, i),
				Type:             schemas.TypeOf(e),
				Source:           p.cfg.Source,
				Time:             now,
				SchemaVersion:    schemas.SchemaVersionOf(e),
				AggregateID:      env.AggregateID,
				AggregateVersion: st.Version,
				CommandID:        env.ID,
				Tenant:           env.Tenant,
			}
			data, err := json.Marshal(e)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", ev.Type, err)
			}
			ev.Data = data
			ref := &out.outcome.Events[i]
			*ref = schemas.EventRef{ID: ev.ID, Type: ev.Type, AggregateVersion: ev.AggregateVersion}
			// The command's record key is its aggregate's (decodeCommand checked).
			produceEvent(p.records.Keyed(p.cfg.Topics.Events, r.Partition, r.Key, ev), &ref.Position)
		}
		aggregate.Retire(&st)
		if _, changed := part.changed[key]; !changed && st.Version == int64(len(events)) {
			part.created[key] = true
		}
		part.changed[key] = st
		out.version = st.Version
	}
	// The state goes with the events, so that the changelog's partition
	// joins the transaction with theirs, in one request.
	produceChangelog := func(r changelogRecord) {
		sess.Produce(ctx, &kgo.Record{Topic: p.cfg.Topics.State, Partition: r.partition, Key: r.key, Value: r.value}, onChangelog)
	}
	if err := p.produceStateChangelog(records, staged, now, produceChangelog); err != nil {
		return nil, err
	}
	if predicted == nil {
		// The outcomes name their events' positions, so without a
		// prediction they are produced once the events are acknowledged,
		// still inside the transaction.
		if err := sess.Client().Flush(ctx); err != nil {
			return nil, fmt.Errorf("flush events and state: %w", err)
		}
		if produceErr != nil {
			return nil, fmt.Errorf("produce events and state: %w", produceErr)
		}
		// Flush returns once every promise has run: the offsets are set.
		for _, e := range produced {
			if e.ref != nil {
				*e.ref = kafka.Position(e.record)
			}
		}
	}
	for _, o := range outcomes {
		data, err := json.Marshal(o.outcome)
		if err != nil {
			return nil, fmt.Errorf("encode outcome: %w", err)
		}
		// The outcome goes where its command's aggregate is: the same key.
		tenant, id := schemas.SplitAggregateKey(o.key)
		env := schemas.Envelope{
			ID:               outcomeID(o.outcome.CommandID, o.outcome.CommandPosition),
			Type:             schemas.OutcomeType,
			Source:           p.cfg.Source,
			Time:             now,
			SchemaVersion:    1,
			AggregateID:      id,
			Tenant:           tenant,
			AggregateVersion: o.version,
			CommandID:        o.outcome.CommandID,
			Data:             data,
		}
		produceEvent(p.records.Keyed(p.cfg.Topics.Events, o.record.Partition, o.record.Key, env), nil) // no outcome names an outcome
	}
	if err := p.produceKeyedChangelog(staged, now, produceChangelog); err != nil {
		return nil, err
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return nil, fmt.Errorf("flush outcomes and state: %w", err)
	}
	if produceErr != nil {
		return nil, fmt.Errorf("produce outcomes and state: %w", produceErr)
	}
	// With a prediction, every record must have the offset it was given,
	// or an outcome names a position its event is not at.
	if predicted != nil && slices.ContainsFunc(produced, func(e producedEvent) bool { return e.record.Offset != e.predicted }) {
		return nil, errMispredicted
	}
	// Flush returned with every promise run: the producer holds no record.
	p.records.Recycle()
	return staged, nil
}

// errMispredicted aborts a transaction whose events did not land where
// its outcomes say they are.
var errMispredicted = errors.New("events did not get the offsets their outcomes name (another writer on the events topic?)")

// eventOffsets predicts, per partition of records, the offset of the
// next record on the events topic, or returns nil if some partition's is
// not known. With a prediction the outcomes name their events' positions
// before they are written, and events and outcomes go in one produce
// round trip instead of two, one after the other. The processor owns the
// partition, so its own records are the only ones there: after a commit,
// the next offset is the last one plus the marker's. Anything else on the
// partition (a zombie's aborted records, another tool) makes the
// prediction wrong; the transaction is then aborted before it commits,
// and the next one learns the offsets anew.
func (p *Processor) eventOffsets(records []*kgo.Record) map[int32]int64 {
	next := map[int32]int64{}
	for _, r := range records {
		if _, ok := next[r.Partition]; ok {
			continue
		}
		o, ok := p.partitions[r.Partition]
		if !ok || o.eventsNext == 0 {
			return nil
		}
		next[r.Partition] = o.eventsNext
	}
	return next
}

// keyedExpiryPerTransaction bounds the expired outcomes of keyed commands
// a transaction forgets per partition: enough to keep up with any rate
// the processor decides at, few enough not to hold up a transaction.
const keyedExpiryPerTransaction = 1000

// produceStateChangelog hands produce the changelog records of the
// transaction, per partition it decided commands of: a chunk of the state
// of a partition being bootstrapped; the new state of every aggregate it
// changed; tombstones for keyed outcomes past the window; and the
// marker. The records it changes the store with once the transaction
// commits are kept in staged.
func (p *Processor) produceStateChangelog(records []*kgo.Record, staged *stagedChanges, now time.Time, produce func(changelogRecord)) error {
	for _, part := range partitionsOf(records) {
		o := p.partitions[part]
		stage := func(r changelogRecord) {
			staged.changelog = append(staged.changelog, r)
			produce(r)
		}
		if o.bootstrap {
			// Already in the store: only the changelog lacks them. A
			// chunk goes before the aggregates the transaction changed,
			// so that their newer states are the ones compaction keeps.
			after, err := p.store.chunk(part, o.bootstrapAfter, p.cfg.bootstrapChunk, func(kind byte, key string, value []byte) {
				produce(changelogRecord{partition: part, key: changelogKey(kind, key), value: value})
			})
			if err != nil {
				return err
			}
			// One chunk is the whole bootstrap, written as before chunks
			// existed; several say when they begin and end (the chunk and
			// the record commit together, so their order does not matter).
			switch first := o.bootstrapAfter == nil; {
			case first && after != nil:
				stage(changelogRecord{partition: part, key: []byte(changelogSeeding), value: []byte(seedingBegun)})
			case !first && after == nil:
				stage(changelogRecord{partition: part, key: []byte(changelogSeeding), value: []byte(seedingEnded)})
			}
			staged.bootstrapAfter[part] = after
		}
		// In key order: the store's memtable inserts a batch's keys
		// fastest in order (its skip list starts each search where the
		// last ended).
		for _, key := range slices.Sorted(maps.Keys(o.changed)) {
			stage(changelogRecord{partition: part, key: changelogKey(kindAggregate, key), value: aggregate.MarshalState(nil, o.changed[key]), created: o.created[key]})
		}
		expired, err := p.store.expiredKeyed(part, now.Add(-p.cfg.IdempotencyWindow), keyedExpiryPerTransaction)
		if err != nil {
			return err
		}
		for _, e := range expired {
			stage(changelogRecord{partition: part, key: changelogKey(kindKeyed, e.commandID)})
		}
		stage(changelogRecord{partition: part, key: []byte(changelogMarker), value: []byte{}})
	}
	return nil
}

// produceKeyedChangelog hands produce the outcomes of the transaction's
// keyed commands, once they name their events' positions, and keeps them
// in staged for the store.
func (p *Processor) produceKeyedChangelog(staged *stagedChanges, now time.Time, produce func(changelogRecord)) error {
	for key, o := range staged.keyed {
		v, err := marshalKeyed(KeyedOutcome{Outcome: *o, DecidedAt: now})
		if err != nil {
			return fmt.Errorf("encode outcome: %w", err)
		}
		r := changelogRecord{partition: key.partition, key: changelogKey(kindKeyed, key.commandID), value: v}
		staged.changelog = append(staged.changelog, r)
		produce(r)
	}
	return nil
}

// partitionsOf lists the partitions of records, each once.
func partitionsOf(records []*kgo.Record) []int32 {
	var parts []int32
	seen := map[int32]bool{}
	for _, r := range records {
		if !seen[r.Partition] {
			seen[r.Partition] = true
			parts = append(parts, r.Partition)
		}
	}
	return parts
}

// versionConflict rejects a command whose aggregate is not at the version
// it expects; nil if it is, or if the command expects none.
func versionConflict(env schemas.Envelope, current int64) *schemas.Rejection {
	if schemas.ExpectedVersionOK(env.ExpectedVersion, current) {
		return nil
	}
	var detail string
	switch expected := *env.ExpectedVersion; expected {
	case schemas.ExpectExisting:
		detail = fmt.Sprintf("the command expects %s to exist; it does not (version 0)", env.AggregateID)
	case 0:
		detail = fmt.Sprintf("the command expects %s not to exist yet; it is at version %d", env.AggregateID, current)
	default:
		detail = fmt.Sprintf("the command expects %s at version %d; it is at version %d", env.AggregateID, expected, current)
	}
	return &schemas.Rejection{Code: schemas.CodeVersionConflict, Detail: detail}
}

func decodeCommand(r *kgo.Record) (schemas.Envelope, any, error) {
	env, err := kafka.Envelope(r)
	if err != nil {
		// Keep what can be read so the outcome names the command.
		env.ID, _ = kafka.Header(r, schemas.HeaderID)
		env.Type, _ = kafka.Header(r, schemas.HeaderType)
		return env, nil, err
	}
	cmd, err := schemas.DecodeCommand(env)
	return env, cmd, err
}
