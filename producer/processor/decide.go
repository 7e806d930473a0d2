package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
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
	if err := p.rebuildMissing(ctx, records); err != nil {
		// Without state no decision is safe: abort so the commands are
		// redelivered, and try again.
		p.log.Error("rebuild aggregate state", "err", err)
		if _, endErr := sess.End(ctx, kgo.TryAbort); endErr != nil {
			return fmt.Errorf("abort after failed rebuild: %w", endErr)
		}
		return nil
	}
	began := time.Now()
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	staged, err := p.decideBatch(ctx, sess, records)
	if err != nil {
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
		// The decisions changed the in-memory state as they were made; it
		// is only right if they were committed, so drop all of it. The
		// session rewinds to the last committed offsets, and the next
		// batch rebuilds state from the events topic.
		p.partitions = map[int32]*Partition{}
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
		Took: now.Sub(began), Decided: make([]time.Duration, len(records))}
	for i, r := range records {
		tx.Decided[i] = now.Sub(r.Timestamp)
	}
	p.cfg.Observer.Committed(tx)
	for part, next := range nextOffsets(records) {
		p.watch.Progressed(part, next)
	}
	for key, o := range staged.keyed {
		if part, ok := p.partitions[key.partition]; ok {
			part.remember(*o, now, p.cfg.IdempotencyWindow)
		}
	}
	p.reportHeld()
	return nil
}

// reportHeld tells the observer what state is in memory.
func (p *Processor) reportHeld() {
	var aggregates, keyed int
	var bytes int64
	for _, part := range p.partitions {
		aggregates += len(part.Aggregates)
		keyed += len(part.Keyed)
		bytes += part.bytes
	}
	p.cfg.Observer.Held(aggregates, keyed, bytes)
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

	accepted, rejected, duplicates int
}

// decided returns the outcome of a command with an idempotency key decided
// in this transaction or remembered from earlier ones.
func (p *Processor) decided(staged *stagedChanges, partition int32, commandID string) (schemas.Outcome, bool) {
	if o, ok := staged.keyed[keyedCommand{partition, commandID}]; ok {
		return *o, true
	}
	if part, ok := p.partitions[partition]; ok {
		if k, ok := part.Keyed[commandID]; ok {
			return k.Outcome, true
		}
	}
	return schemas.Outcome{}, false
}

type pendingOutcome struct {
	record  *kgo.Record
	outcome schemas.Outcome
	version int64
}

// decideBatch decides every command in order and produces events and
// outcomes inside the open transaction. Each decision changes the
// aggregate's in-memory state at once (copying every touched state first
// cost a tenth of the processor's CPU); transact drops all state unless the
// transaction commits.
func (p *Processor) decideBatch(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record) (*stagedChanges, error) {
	staged := &stagedChanges{keyed: map[keyedCommand]*schemas.Outcome{}}
	outcomes := make([]*pendingOutcome, 0, len(records))
	var (
		produceMu  sync.Mutex
		produceErr error
	)
	now := time.Now().UTC()
	for _, r := range records {
		env, cmd, decodeErr := decodeCommand(r)
		out := &pendingOutcome{record: r, outcome: schemas.Outcome{
			CommandID:       env.ID,
			CommandType:     env.Type,
			AggregateID:     string(r.Key),
			CommandPosition: kafka.Position(r),
		}}
		outcomes = append(outcomes, out)
		if decodeErr != nil {
			out.outcome.Status = schemas.StatusRejected
			staged.rejected++
			out.outcome.Rejection = &schemas.Rejection{Code: aggregate.CodeUndecodableCommand, Detail: decodeErr.Error()}
			continue
		}
		out.outcome.IdempotencyKey = env.IdempotencyKey
		if env.IdempotencyKey != "" {
			if original, ok := p.decided(staged, r.Partition, env.ID); ok {
				// A retry: repeat the original outcome, decide nothing.
				out.outcome = original
				out.outcome.CommandPosition = kafka.Position(r)
				out.outcome.DuplicateOf = &original.CommandPosition
				staged.duplicates++
				continue
			}
			// Filled in as the command is decided and its events produced.
			staged.keyed[keyedCommand{r.Partition, env.ID}] = &out.outcome
		}
		part, ok := p.partitions[r.Partition]
		if !ok {
			return nil, fmt.Errorf("no state for partition %d: it was not rebuilt", r.Partition)
		}
		// A copy, stored back only once it has events: refusals of
		// commands to unknown ids must not fill memory.
		// An aggregate is its tenant's: the same id in two tenants is two
		// aggregates with their own state.
		key := schemas.KeyOf(env)
		st := part.Aggregates[key]
		// Decisions change a cart's lines in place: its size is taken
		// before.
		sizeBefore := aggregate.SizeOf(st)
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
				ID:               uuid.NewSHA1(eventIDSpace, []byte(env.ID+"/"+strconv.Itoa(i))).String(),
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
			sess.Produce(ctx, kafka.Record(p.cfg.Topics.Events, r.Partition, ev), func(rec *kgo.Record, err error) {
				produceMu.Lock()
				defer produceMu.Unlock()
				if err != nil {
					produceErr = errors.Join(produceErr, err)
					return
				}
				ref.Position = schemas.Position{Partition: rec.Partition, Offset: rec.Offset}
			})
		}
		aggregate.Retire(&st)
		if _, held := part.Aggregates[key]; !held {
			sizeBefore = -int64(len(key)) - heldAggregateOverhead
		}
		part.Aggregates[key] = st
		part.bytes += aggregate.SizeOf(st) - sizeBefore
		out.version = st.Version
	}
	// The outcomes name their events' positions, so they are produced once
	// the events are acknowledged, still inside the transaction.
	if err := sess.Client().Flush(ctx); err != nil {
		return nil, fmt.Errorf("flush events: %w", err)
	}
	if produceErr != nil {
		return nil, fmt.Errorf("produce events: %w", produceErr)
	}
	for _, o := range outcomes {
		data, err := json.Marshal(o.outcome)
		if err != nil {
			return nil, fmt.Errorf("encode outcome: %w", err)
		}
		// The outcome goes where its command's aggregate is: the same key.
		tenant, id := schemas.SplitAggregateKey(string(o.record.Key))
		env := schemas.Envelope{
			ID:               uuid.NewSHA1(eventIDSpace, []byte(o.outcome.CommandID+"/outcome/"+o.outcome.CommandPosition.String())).String(),
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
		sess.Produce(ctx, kafka.Record(p.cfg.Topics.Events, o.record.Partition, env), func(_ *kgo.Record, err error) {
			if err != nil {
				produceMu.Lock()
				produceErr = errors.Join(produceErr, err)
				produceMu.Unlock()
			}
		})
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return nil, fmt.Errorf("flush outcomes: %w", err)
	}
	if produceErr != nil {
		return nil, fmt.Errorf("produce outcomes: %w", produceErr)
	}
	return staged, nil
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
