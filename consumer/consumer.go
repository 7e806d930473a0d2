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
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/groupwatch"
	"github.com/kappa-cqrs/kappa/kafka"
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

// Fencer is an optional interface of a Sink that cannot check a write's
// position against its contents in the same step as the write (ClickHouse):
// it keeps out the writes of members that lost their partitions without
// knowing it (stopped past the session timeout, then resumed).
type Fencer interface {
	// Fence makes member the sink's writer and shuts out every writer
	// not in live, the group's members now: when it returns, no write of
	// theirs is in flight or can land. It is called on every assignment,
	// before Resume.
	Fence(ctx context.Context, member string, live []string) error
	// Fenced reports whether an Apply error means that this writer was
	// shut out; its batches are then dropped and the member joins again.
	Fenced(err error) bool
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
	// Kafka is how the member reaches Kafka. Required.
	Kafka kafka.Connection
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
	// StallTimeout is how long the member may hold no partition while
	// some have no owner, or hold partitions whose records wait while it
	// applies none, before Ready says it is not ready (groupwatch).
	// Default 30s.
	StallTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
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
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Kafka.Validate()}
	for name, v := range map[string]string{"Group": c.Group, "Topic": c.Topic, "DeadLetterTopic": c.DeadLetterTopic, "Projection": c.Projection} {
		if v == "" {
			errs = append(errs, fmt.Errorf("consumer: %s is required", name))
		}
	}
	if c.MaxBatchRecords < 0 {
		errs = append(errs, errors.New("consumer: MaxBatchRecords must be positive"))
	}
	if c.FlushInterval < 0 || c.MaxRetryBackoff < 0 || c.SessionTimeout < 0 || c.StallTimeout < 0 {
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
	// client is a client of no group: it parks dead letters, redrives,
	// and reads offsets and the group's state for the current member.
	client *kgo.Client
	admin  *kadm.Client
	watch  *groupwatch.Watch
	stop   context.CancelCauseFunc // ends Run with an error found in a callback

	mu    sync.Mutex
	owned map[int32]bool // partitions the current member holds
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
	return &Consumer{cfg: cfg, sink: sink, book: deadletter.NewBook(cfg.Projection), log: cfg.Logger.With("projection", cfg.Projection),
		owned: map[int32]bool{}}, nil
}

// Healthy reports whether the last attempt to apply a batch succeeded.
func (c *Consumer) Healthy() bool { return c.healthy.Load() }

// Ready returns nil when the member does its share: the sink takes its
// writes, and it is a member of its group that holds partitions while
// some have no owner and applies the records that wait on those it holds
// (groupwatch). Otherwise the error says why.
func (c *Consumer) Ready() error {
	if !c.healthy.Load() {
		return errors.New("the last attempt to apply a batch failed; retrying")
	}
	c.mu.Lock()
	w := c.watch
	c.mu.Unlock()
	if w == nil {
		return errors.New("not started")
	}
	return w.Ready()
}

// AppliedRecords counts records applied since start.
func (c *Consumer) AppliedRecords() int64 { return c.applied.Load() }

// Run consumes until ctx ends, then flushes the batch in hand (within
// ShutdownTimeout) and returns. Should that flush fail, the sink's own
// positions make the redelivery harmless. A member that the sink fences
// off (it lost its partitions while it was stopped) drops what it holds
// and joins the group again as a new member.
func (c *Consumer) Run(ctx context.Context) error {
	plain, err := c.cfg.Kafka.NewClient(append(kafka.DurableProducer(), kgo.ProducerLinger(0))...)
	if err != nil {
		return fmt.Errorf("create kafka client for %s: %w", c.cfg.Projection, err)
	}
	defer plain.Close()
	c.client, c.admin = plain, kadm.NewClient(plain)
	watchCfg := groupwatch.Config{Kafka: c.cfg.Kafka, Group: c.cfg.Group, Topic: c.cfg.Topic, StallTimeout: c.cfg.StallTimeout, Logger: c.log}
	if o, ok := c.cfg.Observer.(groupwatch.Observer); ok {
		watchCfg.Observer = o
	}
	watch, err := groupwatch.New(watchCfg)
	if err != nil {
		return err
	}
	defer watch.Close()
	c.mu.Lock()
	c.watch = watch
	c.mu.Unlock()
	ctx, c.stop = context.WithCancelCause(ctx)
	defer c.stop(nil)

	var background sync.WaitGroup
	defer background.Wait()
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	// The book of parked records follows the dead-letter topic for as long
	// as the consumer runs; assignments wait until it has caught up.
	background.Go(func() {
		if err := c.book.Follow(bgCtx, c.cfg.Kafka, c.cfg.DeadLetterTopic); err != nil {
			c.log.Warn("follow dead letters", "err", err)
		}
	})
	background.Go(func() { _ = watch.Run(bgCtx) })
	background.Go(func() { c.redriveOrphans(bgCtx) })

	c.healthy.Store(true)
	rejoin := newBackoff(time.Second, c.cfg.MaxRetryBackoff)
	for {
		err := c.member(ctx)
		if cause := context.Cause(ctx); errors.Is(cause, ErrPositionsAheadOfTopic) || errors.Is(cause, ErrTopicRecreated) {
			return cause
		}
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errFenced) {
			return err
		}
		c.log.Warn("fenced off: the group gave this member's partitions to another while it was not running; its batches are dropped and it joins again", "err", err)
		if err := rejoin.wait(ctx); err != nil {
			return nil //nolint:nilerr // shutting down is not a failure
		}
	}
}

// member runs one membership of the group: a client, its assignments and
// the poll loop, until ctx ends or the sink fences it off.
func (c *Consumer) member(ctx context.Context) error {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(c.cfg.SessionTimeout),
		kgo.OnPartitionsRevoked(c.disown),
		kgo.OnPartitionsLost(c.disown),
	}
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	// The group may assign partitions before NewClient has returned; the
	// callback waits for the client it belongs to.
	var cl *kgo.Client
	created := make(chan struct{})
	if brokenForFaultTests {
		// The negative control of the fault suite: Kafka's offsets decide,
		// committed every few seconds, like a naive sink connector.
		c.log.Warn("BROKEN BUILD: resuming from Kafka's committed offsets with auto-commit")
	} else {
		opts = append(opts, kgo.DisableAutoCommit(), kgo.AdjustFetchOffsetsFn(func(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			select {
			case <-created:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return c.resumeFromSink(ctx, cl, assigned)
		}))
	}
	cl, err := c.cfg.Kafka.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka client for %s: %w", c.cfg.Projection, err)
	}
	close(created)
	defer func() {
		cl.Close()
		c.mu.Lock()
		clear(c.owned)
		c.mu.Unlock()
	}()
	c.watch.SetMember(func() string { id, _ := cl.GroupMetadata(); return id })
	return c.loop(ctx, cl)
}

// disown forgets partitions the member gave up or lost.
func (c *Consumer) disown(_ context.Context, _ *kgo.Client, gone map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, parts := range gone {
		for _, p := range parts {
			delete(c.owned, p)
		}
	}
}

// owns reports whether the current member holds a partition.
func (c *Consumer) owns(partition int32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owned[partition]
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
