// Package processor runs the command processors: a consumer group over the
// commands topic that decides each command against its aggregate's state
// and writes the resulting events, the command's outcome and the consumed
// command offsets in one Kafka transaction. A crash therefore never leaves
// half a decision, and a decision is never made twice.
//
// A processor keeps the state of the aggregates on the partitions it owns in
// memory. It rebuilds a partition's state from the events topic the first
// time it consumes a command from that partition after an assignment; by
// then the previous owner's transaction is resolved, because the group
// fetches offsets with KIP-447's stable-offset fencing.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/groupwatch"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

// eventIDSpace namespaces the deterministic ids of events and outcomes:
// the same command always yields the same event ids.
var eventIDSpace = uuid.MustParse("6f1c3a52-8d0e-4b8a-9a43-2f0b1c7e5d10")

// slowTransaction is how long a transaction may take before it is logged.
const slowTransaction = 300 * time.Millisecond

// Observer receives what a Processor decides; metrics plug in here.
type Observer interface {
	// Committed reports the commands of a committed transaction.
	Committed(accepted, rejected, duplicates int)
	// Aborted reports an aborted transaction.
	Aborted()
}

type noObserver struct{}

func (noObserver) Committed(int, int, int) {}
func (noObserver) Aborted()                {}

// Config configures a Processor. Zero values take the documented defaults.
type Config struct {
	// Kafka is how the processor reaches Kafka. Required.
	Kafka kafka.Connection
	// Topics names the topics. Required.
	Topics kafka.Topics
	// Group is the consumer group of the processors. Default "kappa-processor".
	Group string
	// TransactionalID identifies this instance's transactional producer; it
	// must be unique per running instance. Default "<group>-<instance id>"
	// with an InstanceID, else "<group>-<host>-<pid>".
	TransactionalID string
	// Source is written as ce_source. Default "kappa/processor".
	Source string
	// MaxBatchRecords caps the commands decided in one transaction. Default 5000.
	MaxBatchRecords int
	// MinTransactionInterval is the least time between the starts of two
	// transactions. Each transaction costs the broker a dozen requests and
	// a marker per partition whatever its size, so under load fewer,
	// larger ones are cheaper; the price is up to this much added latency
	// from acknowledgement to event. Default 100ms; a negative value
	// starts one as soon as commands are in hand.
	MinTransactionInterval time.Duration
	// TransactionTimeout is how long the broker lets a transaction stay
	// open before it aborts it, and so how long the processor waits for
	// one to end: an abandoned transaction blocks the rebuild of its
	// partitions until it times out, so it is kept short. Default 10s.
	TransactionTimeout time.Duration
	// InstanceID, if set, makes this member static (KIP-345), so that a
	// restarted instance takes its partitions back at once. Default none.
	InstanceID string
	// SessionTimeout is how long the group waits for a silent member before
	// moving its partitions. Default 10s.
	SessionTimeout time.Duration
	// IdempotencyWindow is how long the outcome of a command that carried
	// an idempotency key is remembered, so that a retry of it is answered
	// with that outcome instead of being decided again. Default 24h.
	IdempotencyWindow time.Duration
	// Observer receives metrics events. Default none.
	Observer Observer
	// StallTimeout is how long the processor may hold no partition while
	// some have no owner, or hold partitions whose commands wait while it
	// decides none, before Ready says it is not ready. Default 30s.
	StallTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = "kappa-processor"
	}
	if c.TransactionalID == "" && c.InstanceID != "" {
		// Stable across restarts: the restarted instance fences its
		// predecessor's open transaction at once.
		c.TransactionalID = c.Group + "-" + c.InstanceID
	}
	if c.TransactionalID == "" {
		host, _ := os.Hostname()
		c.TransactionalID = c.Group + "-" + host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.Source == "" {
		c.Source = "kappa/processor"
	}
	if c.MaxBatchRecords == 0 {
		c.MaxBatchRecords = 5000
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = 24 * time.Hour
	}
	if c.MinTransactionInterval == 0 {
		c.MinTransactionInterval = 100 * time.Millisecond
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Kafka.Validate()}
	if c.Topics.Commands == "" || c.Topics.Events == "" {
		errs = append(errs, errors.New("processor: Topics needs commands and events"))
	}
	if c.MaxBatchRecords < 0 {
		errs = append(errs, errors.New("processor: MaxBatchRecords must be positive"))
	}
	if c.SessionTimeout < 0 || c.TransactionTimeout < 0 || c.IdempotencyWindow < 0 || c.StallTimeout < 0 {
		errs = append(errs, errors.New("processor: SessionTimeout, TransactionTimeout, IdempotencyWindow and StallTimeout must not be negative"))
	}
	if c.TransactionTimeout > 0 && c.MinTransactionInterval >= c.TransactionTimeout {
		errs = append(errs, fmt.Errorf("processor: MinTransactionInterval %s must be shorter than TransactionTimeout %s", c.MinTransactionInterval, c.TransactionTimeout))
	}
	return errors.Join(errs...)
}

// WithDefaults returns the configuration with every zero value replaced by
// its default, as New uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

// Processor decides commands on the partitions this instance owns.
type Processor struct {
	cfg Config
	log *slog.Logger

	// partitions holds the committed state of each owned partition; only
	// the Run goroutine touches it.
	partitions map[int32]*Partition

	mu      sync.Mutex
	revoked map[int32]bool // partitions to forget, set by rebalance callbacks
	watch   *groupwatch.Watch
}

// New returns a Processor, or the configuration's problems.
func New(cfg Config) (*Processor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Processor{
		cfg:        cfg,
		log:        cfg.Logger.With("group", cfg.Group),
		partitions: map[int32]*Partition{},
		revoked:    map[int32]bool{},
	}, nil
}

// Run decides commands until ctx ends. A transactional session that fails
// (the broker went away while a transaction was open, and franz-go cannot
// go on with it) is closed, the state it decided from is dropped, and a new
// session takes over after a backoff: with the same transactional id, it
// fences the old one's open transaction.
func (p *Processor) Run(ctx context.Context) error {
	watch, err := groupwatch.New(groupwatch.Config{Kafka: p.cfg.Kafka, Group: p.cfg.Group, Topic: p.cfg.Topics.Commands,
		StallTimeout: p.cfg.StallTimeout, Observer: p.cfg.Observer, Logger: p.log})
	if err != nil {
		return err
	}
	defer watch.Close()
	p.mu.Lock()
	p.watch = watch
	p.mu.Unlock()
	watchCtx, stopWatching := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() { defer close(watching); _ = watch.Run(watchCtx) }()
	defer func() { stopWatching(); <-watching }()

	wait, maxWait := time.Second, 30*time.Second
	for {
		err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errConfig) {
			return err
		}
		p.partitions = map[int32]*Partition{}
		p.log.Error("the transactional session failed; a new one takes over", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}

// Ready returns nil when this processor is a member of its group that
// does its share of the partitions (groupwatch), else why not.
func (p *Processor) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watch == nil {
		return errors.New("not started")
	}
	return p.watch.Ready()
}

// errConfig marks errors that a new session would meet again.
var errConfig = errors.New("processor configuration")

// session decides commands in one transactional session until ctx ends
// or the session fails.
func (p *Processor) session(ctx context.Context) error {
	forget := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, parts := range lost {
			for _, part := range parts {
				p.revoked[part] = true
			}
		}
	}
	opts := []kgo.Opt{
		kgo.TransactionalID(p.cfg.TransactionalID),
		kgo.TransactionTimeout(p.cfg.TransactionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topics.Commands),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// State is dropped whenever a partition is assigned, not only when
		// it is revoked: the transact session skips the revoke callback when
		// a second rebalance comes before the next End, and a partition
		// that left and came back must not keep state from before it left.
		kgo.OnPartitionsAssigned(forget),
		kgo.OnPartitionsRevoked(forget),
		kgo.OnPartitionsLost(forget),
		kafka.Compression(),
		// Every decided batch ends in an explicit Flush, which cuts the
		// linger short; until then records wait, so that a transaction
		// adds all its partitions in one request and writes them in one
		// produce request instead of a trickle of each (broker request log).
		kgo.ProducerLinger(processorLinger),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
	}
	if p.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(p.cfg.InstanceID))
	}
	sess, err := p.cfg.Kafka.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("%w: create transactional session: %w", errConfig, err)
	}
	defer sess.Close()
	p.watch.SetMember(func() string { id, _ := sess.Client().GroupMetadata(); return id })

	var lastBegin time.Time
	for {
		if wait := p.cfg.MinTransactionInterval - time.Since(lastBegin); wait > 0 {
			// Commands that arrive meanwhile are fetched in the
			// background and decided together in the next transaction.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		fetches := sess.PollRecords(ctx, p.cfg.MaxBatchRecords)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			p.log.Warn("fetch commands", "topic", topic, "partition", partition, "err", err)
		})
		p.forgetRevoked()
		var records []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) { records = append(records, r) })
		if len(records) == 0 {
			continue
		}
		// Commands in hand are decided and committed even if ctx ends
		// meanwhile, so that SIGTERM leaves nothing for a restart to redo;
		// past its timeout the broker aborts a transaction anyway.
		lastBegin = time.Now()
		txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.TransactionTimeout)
		err := p.transact(txCtx, sess, records)
		cancel()
		if err != nil {
			return err
		}
	}
}

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
	p.cfg.Observer.Committed(staged.accepted, staged.rejected, staged.duplicates)
	for part, next := range nextOffsets(records) {
		p.watch.Progressed(part, next)
	}
	for key, o := range staged.keyed {
		if part, ok := p.partitions[key.partition]; ok {
			part.remember(*o, time.Now(), p.cfg.IdempotencyWindow)
		}
	}
	return nil
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
		st := part.Aggregates[env.AggregateID]
		events, rejection := aggregate.Decide(&st, env.AggregateID, cmd)
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
		part.Aggregates[env.AggregateID] = st
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
		env := schemas.Envelope{
			ID:               uuid.NewSHA1(eventIDSpace, []byte(o.outcome.CommandID+"/outcome/"+o.outcome.CommandPosition.String())).String(),
			Type:             schemas.OutcomeType,
			Source:           p.cfg.Source,
			Time:             now,
			SchemaVersion:    1,
			AggregateID:      string(o.record.Key),
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

func (p *Processor) forgetRevoked() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part := range p.revoked {
		delete(p.partitions, part)
		delete(p.revoked, part)
	}
}

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
		p.partitions[part] = state
	}
	p.log.Info("rebuilt aggregate state", "partitions", missing, "events", events, "took", time.Since(start))
	return nil
}

// Partition is the processor's state of one partition: its aggregates and
// the remembered outcomes of commands that carried an idempotency key.
type Partition struct {
	// Aggregates holds states by value: a processor keeps every aggregate
	// it owns, and the garbage collector scans them all on every cycle.
	Aggregates map[string]aggregate.State
	Keyed      map[string]KeyedOutcome // by command id
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
			st := aggregates[env.AggregateID]
			aggregate.Apply(&st, event)
			aggregate.Retire(&st)
			aggregates[env.AggregateID] = st
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

func decodeCommand(r *kgo.Record) (schemas.Envelope, any, error) {
	env, err := kafka.Envelope(r)
	if err != nil {
		// Keep what can be read so the outcome names the command.
		for _, h := range r.Headers {
			if h.Key == schemas.HeaderID {
				env.ID = string(h.Value)
			}
			if h.Key == schemas.HeaderType {
				env.Type = string(h.Value)
			}
		}
		return env, nil, err
	}
	cmd, err := schemas.DecodeCommand(env)
	return env, cmd, err
}

// nextOffsets returns, per partition, the offset after the last of records.
func nextOffsets(records []*kgo.Record) map[int32]int64 {
	next := map[int32]int64{}
	for _, r := range records {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	return next
}
