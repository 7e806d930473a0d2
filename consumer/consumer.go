// Package consumer is the consumer-group runtime every projection runs on:
// poll, decode, batch, apply to the sink, then commit; the next batch is
// polled and decoded while the sink applies the previous one. The sink, not Kafka's
// committed offsets, decides where consumption resumes after an assignment,
// because a sink is not part of Kafka transactions: only its own contents
// say what it has. Offsets are still committed to Kafka after each applied
// batch so that lag tooling works.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafkaenv"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Sink is where a projection writes. Implementations live in projections/.
type Sink interface {
	// Resume returns, for each partition of topic, the next offset to
	// consume according to the sink's own state. A partition missing from
	// the result starts at the beginning of the topic.
	Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error)
	// Apply writes a batch, in order per partition, together with the
	// positions it covers, so that a later Resume reflects exactly what was
	// written. Redelivered records must not be applied twice.
	Apply(ctx context.Context, batch []schemas.Record) error
}

// TopicBinder is an optional interface of a Sink: the sink keeps, with its
// data, the id of the topic it was built from. BindTopic stores topicID for
// topic if the sink has none yet and returns the id it holds, so that the
// consumer never resumes a sink's positions on another topic of the same
// name (one deleted and created again).
type TopicBinder interface {
	BindTopic(ctx context.Context, topic, topicID string) (bound string, err error)
}

// ErrTopicRecreated stops a projection whose store was built from an
// earlier topic of the same name: its positions mean nothing in this one.
var ErrTopicRecreated = errors.New("the store was built from another topic of the same name")

// ErrParkedBehind is the reason given to records parked only to keep their
// aggregate's order behind an earlier parked record.
var ErrParkedBehind = errors.New("parked behind an earlier record of the same aggregate")

// Observer receives what a Consumer does; metrics plug in here so that this
// package imports no metrics library.
type Observer interface {
	// BatchApplied reports a batch the sink accepted: its size, the time
	// to apply it including retries, and the newest event time in it.
	BatchApplied(records int, took time.Duration, newest time.Time)
	// BatchFailed reports an attempt the sink refused; it will be retried.
	BatchFailed(err error)
	// DeadLettered reports records parked in the dead-letter topic.
	DeadLettered(n int)
}

// ParkObserver is an optional extension of Observer: it receives the counts
// of the dead-letter book after every batch.
type ParkObserver interface {
	Parked(open, parked, redriven, discarded int)
}

// ProgressObserver is an optional extension of Observer: after each batch
// it receives, per partition, the offset of the last command whose outcome
// (and so all of whose events) the sink has applied. A load test compares
// it with the positions ingest acknowledged to measure freshness.
type ProgressObserver interface {
	CommandsThrough(partition int32, commandOffset int64)
}

type noObserver struct{}

func (noObserver) BatchApplied(int, time.Duration, time.Time) {}
func (noObserver) BatchFailed(error)                          {}
func (noObserver) DeadLettered(int)                           {}

// Config configures a Consumer. Zero values take the documented defaults.
type Config struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// Group is the consumer group id, for example "kappa-clickhouse". Required.
	Group string
	// Topic is the events topic to project. Required.
	Topic string
	// DeadLetterTopic receives records that cannot be decoded. Required.
	DeadLetterTopic string
	// Projection names the projection in logs and dead-letter headers. Required.
	Projection string
	// MaxBatchRecords caps one applied batch. Default 10000.
	MaxBatchRecords int
	// FlushInterval is how long a batch is collected after its first
	// record, or longer while the previous batch is still being applied
	// (waiting then costs nothing and makes the batch bigger). Default 200ms.
	FlushInterval time.Duration
	// MaxRetryBackoff caps the wait between attempts to apply a batch the
	// sink refused. Attempts go on until the context ends. Default 10s.
	MaxRetryBackoff time.Duration
	// InstanceID, if set, makes this member static (KIP-345): a restarted
	// instance with the same id takes its partitions back at once instead
	// of waiting for the group to expire the old member. Default none.
	InstanceID string
	// SessionTimeout is how long the group waits for a silent member before
	// moving its partitions. Default 10s.
	SessionTimeout time.Duration
	// MaxBlock bounds how long rebalances wait on this member while
	// batches are applied or retried. Past it the consumer rewinds to the
	// batches it holds, lets a pending rebalance
	// happen, and retries after it if it still owns the partitions. It must
	// stay below the group's rebalance timeout (60s), or the group expels
	// the member and a second one could write the same partitions. Default 30s.
	MaxBlock time.Duration
	// PoisonAttempts is how often a batch the sink refuses for its contents
	// (see PermanentClassifier) is tried before its records are tried one
	// by one and the refused ones parked. Default 3.
	PoisonAttempts int
	// Observer receives metrics events. Default none.
	Observer Observer
	// ShutdownTimeout bounds flushing the batch in hand when Run's context
	// ends. Default 30s.
	ShutdownTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// ClientOpts are extra franz-go options, for tests and tuning.
	ClientOpts []kgo.Opt
}

func (c *Config) setDefaults() {
	if c.MaxBatchRecords == 0 {
		c.MaxBatchRecords = 10000
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 200 * time.Millisecond
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = 10 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	if c.PoisonAttempts == 0 {
		c.PoisonAttempts = 3
	}
	if c.MaxBlock == 0 {
		c.MaxBlock = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("consumer: Brokers is required"))
	}
	for name, v := range map[string]string{"Group": c.Group, "Topic": c.Topic, "DeadLetterTopic": c.DeadLetterTopic, "Projection": c.Projection} {
		if v == "" {
			errs = append(errs, fmt.Errorf("consumer: %s is required", name))
		}
	}
	if c.MaxBatchRecords < 0 {
		errs = append(errs, errors.New("consumer: MaxBatchRecords must be positive"))
	}
	if c.FlushInterval < 0 || c.MaxRetryBackoff < 0 || c.SessionTimeout < 0 {
		errs = append(errs, errors.New("consumer: durations must not be negative"))
	}
	return errors.Join(errs...)
}

// Consumer runs one projection's consumer group member.
type Consumer struct {
	cfg     Config
	sink    Sink
	book    *deadletter.Book
	log     *slog.Logger
	healthy atomic.Bool
	applied atomic.Int64
	admin   *kadm.Client            // reads end offsets while resuming
	stop    context.CancelCauseFunc // ends Run with an error found in a callback
}

// ErrPositionsAheadOfTopic stops a projection whose store says it has
// applied offsets the topic does not have: the topic was recreated or
// truncated after the store was built, and resuming would skip the new
// topic's records up to those offsets.
var ErrPositionsAheadOfTopic = errors.New("the store's positions are ahead of the topic")

// New returns a Consumer for sink, or the configuration's problems.
func New(cfg Config, sink Sink) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Consumer{cfg: cfg, sink: sink, book: deadletter.NewBook(cfg.Projection), log: cfg.Logger.With("projection", cfg.Projection)}, nil
}

// Healthy reports whether the last attempt to apply a batch succeeded.
func (c *Consumer) Healthy() bool { return c.healthy.Load() }

// AppliedRecords counts records applied since start.
func (c *Consumer) AppliedRecords() int64 { return c.applied.Load() }

// Run consumes until ctx ends, then flushes the batch in hand (within
// ShutdownTimeout) and returns. Should that flush fail, the sink's own
// positions make the redelivery harmless.
func (c *Consumer) Run(ctx context.Context) error {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kafkaenv.Compression(),
		kgo.ProducerLinger(0),
		kgo.SessionTimeout(c.cfg.SessionTimeout),
	}, c.cfg.ClientOpts...)
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	if brokenForFaultTests {
		// The negative control of the fault suite: Kafka's offsets decide,
		// committed every few seconds, like a naive sink connector.
		c.log.Warn("BROKEN BUILD: resuming from Kafka's committed offsets with auto-commit")
	} else {
		opts = append(opts, kgo.DisableAutoCommit(), kgo.AdjustFetchOffsetsFn(c.resumeFromSink))
	}
	// The book of parked records follows the dead-letter topic for as long
	// as the consumer runs; assignments wait until it has caught up.
	followCtx, stopFollowing := context.WithCancel(ctx)
	following := make(chan error, 1)
	go func() {
		following <- c.book.Follow(followCtx, c.cfg.Brokers, c.cfg.DeadLetterTopic, c.cfg.ClientOpts...)
	}()
	defer func() {
		stopFollowing()
		if err := <-following; err != nil {
			c.log.Warn("follow dead letters", "err", err)
		}
	}()

	adminClient, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.cfg.Brokers...)}, c.cfg.ClientOpts...)...)
	if err != nil {
		return fmt.Errorf("create kafka client for %s: %w", c.cfg.Projection, err)
	}
	defer adminClient.Close()
	c.admin = kadm.NewClient(adminClient)
	ctx, c.stop = context.WithCancelCause(ctx)
	defer c.stop(nil)

	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka client for %s: %w", c.cfg.Projection, err)
	}
	defer cl.Close()
	c.healthy.Store(true)
	redriveCtx, stopRedriving := context.WithCancel(ctx)
	redriving := make(chan struct{})
	go func() {
		defer close(redriving)
		c.redriveOrphans(redriveCtx, cl)
	}()
	defer func() { stopRedriving(); <-redriving }()
	err = c.loop(ctx, cl)
	if cause := context.Cause(ctx); errors.Is(cause, ErrPositionsAheadOfTopic) || errors.Is(cause, ErrTopicRecreated) {
		return cause
	}
	return err
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
				c.log.Warn("the sink refused writes for too long; rewinding and letting a rebalance through", "records", len(previous)+len(col.raws))
				cl.SetOffsets(rewindTo(append(previous, col.raws...)))
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
				c.log.Warn("the sink refused writes for too long; rewinding and letting a rebalance through", "records", len(b.raws))
				cl.SetOffsets(rewindTo(b.raws))
				allow()
				continue
			}
			allow()
			return nilOnCancel(ctx, err)
		}
		allow()
	}
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
	if err := c.deadLetter(ctx, cl, b.dead); err != nil {
		return err
	}
	if err := c.apply(ctx, cl, batch, raws, blockedSince); err != nil {
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
// With nothing polled it returns when idle closes, so that a quiet topic
// does not hold rebalances back.
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
			rec, err := kafkaenv.Decode(r)
			if err != nil {
				col.undecodable[len(col.batch)] = err
				rec = schemas.Record{Topic: r.Topic, Position: kafkaenv.Position(r)}
			}
			col.batch = append(col.batch, rec)
			col.raws = append(col.raws, r)
		})
		if len(col.batch) == 0 && idle != nil && !storeBusy() {
			return col, nil
		}
		if deadline.IsZero() && len(col.batch) > 0 {
			deadline = time.Now().Add(c.cfg.FlushInterval)
		}
	}
	return col, nil
}

// prepare decides which records to park: those that cannot be decoded, and
// every later record of their aggregates and of aggregates the book holds
// open. It runs after the previous batch is applied, so that the book has
// what that batch parked.
func (c *Consumer) prepare(ctx context.Context, col collected) prepared {
	b := prepared{batch: col.batch, raws: col.raws}
	parkedInBatch := map[string]string{} // aggregate -> origin position of its first parked record
	bookCurrent := false
	for i, r := range col.raws {
		aggregate := string(r.Key)
		if err, bad := col.undecodable[i]; bad {
			b.dead = append(b.dead, deadLetter{record: r, reason: err})
			if _, ok := parkedInBatch[aggregate]; !ok {
				parkedInBatch[aggregate] = kafkaenv.Position(r).String()
			}
			continue
		}
		if b.batch[i].Envelope.Type == schemas.OutcomeType {
			continue // outcomes change no aggregate's read model; they flow
		}
		behind, inBatch := parkedInBatch[aggregate]
		if _, ok := c.book.FirstOpen(aggregate); ok && !inBatch && !bookCurrent {
			// The entry may have been redriven or discarded a moment ago;
			// parking behind it now would strand this record. Read the
			// dead-letter topic to its end first (rare: only when an
			// aggregate is parked). Failing that, parking keeps the order.
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := c.book.WaitCaughtUp(waitCtx, c.cfg.Brokers, c.cfg.DeadLetterTopic); err != nil {
				c.log.Warn("read the dead-letter topic to its end before parking", "err", err)
			}
			cancel()
			bookCurrent = true
		}
		if entry, ok := c.book.FirstOpen(aggregate); ok && !inBatch {
			behind, inBatch = entry.Origin.String(), true
		}
		if inBatch {
			b.dead = append(b.dead, deadLetter{record: r, reason: fmt.Errorf("%w: aggregate %s waits behind the record parked at %s", ErrParkedBehind, aggregate, behind), behind: behind})
			b.batch[i] = schemas.Record{Topic: r.Topic, Position: kafkaenv.Position(r)}
		}
	}
	return b
}

// apply writes the batch, retrying with capped exponential backoff and full
// jitter until it succeeds or ctx ends: a sink outage blocks, never drops.
func (c *Consumer) apply(ctx context.Context, cl *kgo.Client, batch []schemas.Record, raws []*kgo.Record, blockedSince time.Time) error {
	if len(batch) == 0 {
		return nil
	}
	start := time.Now()
	backoff := 100 * time.Millisecond
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
		if c.permanent(err) && attempt >= c.cfg.PoisonAttempts {
			c.log.Warn("the sink refuses the batch for its contents; applying record by record to park the culprit", "records", len(batch), "err", err)
			if err := c.isolate(ctx, cl, batch, raws, blockedSince); err != nil {
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
		wait := time.Duration(rand.Int64N(int64(backoff))) + time.Millisecond
		c.log.Error("apply batch; retrying", "records", len(batch), "attempt", attempt, "retry_in", wait, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		backoff = min(backoff*2, c.cfg.MaxRetryBackoff)
	}
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
func (c *Consumer) isolate(ctx context.Context, cl *kgo.Client, batch []schemas.Record, raws []*kgo.Record, blockedSince time.Time) error {
	parkedHere := map[string]string{} // aggregate -> origin position of its first parked record
	for i, r := range batch {
		raw := raws[i]
		aggregate := string(raw.Key)
		placeholder := schemas.Record{Topic: r.Topic, Position: r.Position}
		if r.Payload != nil && r.Envelope.Type != schemas.OutcomeType {
			if behind, ok := parkedHere[aggregate]; ok {
				err := fmt.Errorf("%w: aggregate %s waits behind the record parked at %s", ErrParkedBehind, aggregate, behind)
				if err := c.deadLetter(ctx, cl, []deadLetter{{record: raw, reason: err, behind: behind, attempts: 1}}); err != nil {
					return err
				}
				r = placeholder
			}
		}
		backoff := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := c.sink.Apply(ctx, []schemas.Record{r})
			if err == nil {
				c.applied.Add(1)
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if c.permanent(err) && attempt >= c.cfg.PoisonAttempts {
				if err := c.deadLetter(ctx, cl, []deadLetter{{record: raw, reason: err, attempts: attempt}}); err != nil {
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
			if err := sleep(ctx, time.Duration(rand.Int64N(int64(backoff)))+time.Millisecond); err != nil {
				return err
			}
			backoff = min(backoff*2, c.cfg.MaxRetryBackoff)
		}
	}
	return nil
}

// resumeFromSink replaces Kafka's committed offsets with the sink's, once
// the book of parked records is complete.
func (c *Consumer) resumeFromSink(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	if err := c.book.WaitCaughtUp(ctx, c.cfg.Brokers, c.cfg.DeadLetterTopic); err != nil {
		return nil, fmt.Errorf("read parked records: %w", err)
	}
	for topic, partitions := range assigned {
		ids := make([]int32, 0, len(partitions))
		for p := range partitions {
			ids = append(ids, p)
		}
		var next map[int32]int64
		backoff := 100 * time.Millisecond
		for {
			var err error
			next, err = c.sink.Resume(ctx, topic, ids)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("resume %s from sink: %w", topic, err)
			}
			c.healthy.Store(false)
			c.log.Error("read resume positions from sink; retrying", "topic", topic, "err", err)
			if err := sleep(ctx, backoff); err != nil {
				return nil, err
			}
			backoff = min(backoff*2, c.cfg.MaxRetryBackoff)
		}
		if err := c.checkTopic(ctx, topic); err != nil {
			return nil, err
		}
		if err := c.checkPositions(ctx, topic, next); err != nil {
			return nil, err
		}
		for _, p := range ids {
			offset := kgo.NewOffset().AtStart()
			if o, ok := next[p]; ok {
				offset = kgo.NewOffset().At(o)
			}
			partitions[p] = offset.WithEpoch(-1)
			c.log.Info("resume", "topic", topic, "partition", p, "offset", next[p])
		}
	}
	return assigned, nil
}

// checkTopic stops the consumer if the sink was built from another topic
// of the same name.
func (c *Consumer) checkTopic(ctx context.Context, topic string) error {
	binder, ok := c.sink.(TopicBinder)
	if !ok {
		return nil
	}
	details, err := c.admin.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("read the id of %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok {
		return fmt.Errorf("read the id of %s: not in the metadata", topic)
	}
	if d.Err != nil {
		return fmt.Errorf("read the id of %s: %w", topic, d.Err)
	}
	if d.ID == (kadm.TopicID{}) {
		return nil // the broker does not report topic ids; offsets are all there is to check
	}
	id := d.ID.String()
	bound, err := binder.BindTopic(ctx, topic, id)
	if err != nil {
		return fmt.Errorf("bind %s to the store: %w", topic, err)
	}
	if bound != id {
		err := fmt.Errorf("%w: projection %s was built from topic %s with id %s, but %s now has id %s, so it was deleted and created again; rebuild the projection (drop its schema or database) or point it at the topic it was built from",
			ErrTopicRecreated, c.cfg.Projection, topic, bound, topic, id)
		c.log.Error("refusing to resume", "err", err)
		c.stop(err)
		return err
	}
	return nil
}

// checkPositions stops the consumer if the store's positions are beyond
// the end of the topic: the topic was truncated, or recreated on a broker
// or sink that keeps no topic id.
func (c *Consumer) checkPositions(ctx context.Context, topic string, next map[int32]int64) error {
	ends, err := c.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("read the end offsets of %s: %w", topic, err)
	}
	for p, o := range next {
		end, ok := ends.Lookup(topic, p)
		if ok && end.Err == nil && o > end.Offset {
			err := fmt.Errorf("%w: projection %s has applied %s partition %d up to offset %d, but the topic ends at %d, so the topic was recreated or truncated after the store was built; rebuild the projection (drop its schema or database) or point it at the topic it was built from",
				ErrPositionsAheadOfTopic, c.cfg.Projection, topic, p, o-1, end.Offset)
			c.log.Error("refusing to resume", "err", err)
			c.stop(err)
			return err
		}
	}
	return nil
}

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
func (c *Consumer) redriveOrphans(ctx context.Context, cl *kgo.Client) {
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
			outcomes, err := deadletter.Redrive(ctx, cl, c.cfg.DeadLetterTopic, c.book, deadletter.Filter{AggregateID: agg}, applier, false)
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

type deadLetter struct {
	record   *kgo.Record
	reason   error
	behind   string // origin position of the record this one waits behind
	attempts int    // tries to apply it; 0 for records that never reached the sink
}

// deadLetter parks records, keyed as the original, so the partition keeps
// flowing. It produces synchronously before the batch is applied, so a
// parked record is never lost, and enters them in the book at once, so the
// aggregate's next record is parked behind them.
func (c *Consumer) deadLetter(ctx context.Context, cl *kgo.Client, dead []deadLetter) error {
	// A redelivered record that is parked already is not parked again.
	dead = slices.DeleteFunc(slices.Clone(dead), func(d deadLetter) bool {
		return c.book.Has(d.record.Topic, kafkaenv.Position(d.record))
	})
	if len(dead) == 0 {
		return nil
	}
	records := make([]*kgo.Record, len(dead))
	for i, d := range dead {
		r := d.record
		c.log.Warn("dead-letter record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", d.reason)
		headers := append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: deadletter.HeaderReason, Value: []byte(d.reason.Error())},
			kgo.RecordHeader{Key: deadletter.HeaderProjection, Value: []byte(c.cfg.Projection)},
			kgo.RecordHeader{Key: deadletter.HeaderTopic, Value: []byte(r.Topic)},
			kgo.RecordHeader{Key: deadletter.HeaderPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			kgo.RecordHeader{Key: deadletter.HeaderOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			kgo.RecordHeader{Key: deadletter.HeaderAttempts, Value: []byte(strconv.Itoa(d.attempts))},
		)
		if d.behind != "" {
			headers = append(headers, kgo.RecordHeader{Key: deadletter.HeaderBehind, Value: []byte(d.behind)})
		}
		records[i] = &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: headers}
	}
	results := cl.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		return fmt.Errorf("produce %d dead letters to %s: %w", len(records), c.cfg.DeadLetterTopic, err)
	}
	for _, res := range results {
		c.book.Observe(res.Record)
	}
	c.cfg.Observer.DeadLettered(len(records))
	return nil
}

func commandsThrough(batch []schemas.Record) map[int32]int64 {
	through := map[int32]int64{}
	for _, r := range batch {
		if o, ok := r.Payload.(schemas.Outcome); ok {
			p := o.CommandPosition.Partition
			if cur, seen := through[p]; !seen || o.CommandPosition.Offset > cur {
				through[p] = o.CommandPosition.Offset
			}
		}
	}
	return through
}

func newestEvent(batch []schemas.Record) time.Time {
	var newest time.Time
	for _, r := range batch {
		if r.Envelope.Time.After(newest) {
			newest = r.Envelope.Time
		}
	}
	return newest
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
