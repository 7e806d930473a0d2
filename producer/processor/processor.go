// Package processor runs the command processors: a consumer group over the
// commands topic that decides each command against its aggregate's state
// and writes the resulting events, the command's outcome and the consumed
// command offsets in one Kafka transaction. A crash therefore never leaves
// half a decision, and a decision is never made twice.
//
// A processor keeps the state of the aggregates on the partitions it owns
// in a local store on disk (Pebble, with a bounded cache in memory) and
// writes every change to a compacted changelog topic in the same
// transaction as the events. It restores a partition's state from the
// changelog, from the store's checkpoint on, the first time it consumes a
// command from that partition after an assignment; by then the previous
// owner's transaction is resolved, because the group fetches offsets with
// KIP-447's stable-offset fencing. state.go says more.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/groupwatch"
	"github.com/kappa-cqrs/kappa/kafka"
)

// slowTransaction is how long a transaction may take before it is logged.
const slowTransaction = 300 * time.Millisecond

// Observer receives what a Processor decides; metrics plug in here.
type Observer interface {
	// Committed reports a committed transaction.
	Committed(Transaction)
	// Aborted reports an aborted transaction.
	Aborted()
	// Restored reports a restore of state: the records read and how long
	// it took.
	Restored(records int, took time.Duration)
	// Held reports the state held after a change.
	Held(Held)
}

// Held is the state a processor holds for the partitions it owns.
type Held struct {
	// Aggregates and Keyed count the aggregates and the remembered
	// outcomes of keyed commands in the local store.
	Aggregates, Keyed int64
	// InMemory counts the aggregates held in memory: those the last
	// transaction changed.
	InMemory int
	// MemoryBytes is what the local store holds in memory: its block
	// cache, memtables and filters of the aggregates it holds.
	MemoryBytes int64
}

// Transaction is what a committed transaction decided.
type Transaction struct {
	Accepted, Rejected, Duplicates int
	// Took is from its begin to its end.
	Took time.Duration
	// StoreReads counts the aggregates read from the local store since
	// the transaction before, because the cache did not hold them.
	StoreReads int
	// Decided holds, per command, the time from its record's timestamp
	// (when ingest wrote it) to the commit.
	Decided []time.Duration
}

type noObserver struct{}

func (noObserver) Committed(Transaction)       {}
func (noObserver) Aborted()                    {}
func (noObserver) Restored(int, time.Duration) {}
func (noObserver) Held(Held)                   {}

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
	// TransactionInterval bounds how long a transaction waits for
	// commands to join it, counted from the start of the one before.
	// Each transaction costs the broker a dozen requests and a marker per
	// partition whatever its size, so under load fewer, larger ones are
	// cheaper; but a lone command must not wait. The wait therefore grows
	// with the size of the previous transaction, by batchDelayPerCommand
	// per command, up to this bound: an idle processor starts a
	// transaction at once, one under load every TransactionInterval.
	// Default 100ms; a negative value never waits.
	TransactionInterval time.Duration
	// TransactionTimeout is how long the broker lets a transaction stay
	// open before it aborts it, and so how long the processor waits for
	// one to end: an abandoned transaction blocks the restore of its
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
	// StateDir is where the local store of aggregate state lives, in a
	// directory named after the TransactionalID; without a configured
	// one, in the first of "<group>-0", "<group>-1", … that no running
	// processor holds. Keep it across restarts (a volume of a
	// StatefulSet), and a restart reads only the changelog written since
	// it stopped; a processor without it restores from the changelog, in
	// time that follows the number of live aggregates. Default
	// "<os.TempDir()>/kappa-state", as Kafka Streams' state.dir.
	StateDir string
	// StateCacheBytes bounds the local store's block cache in memory.
	// Default 16 MiB.
	StateCacheBytes int64
	// StateCacheAggregates bounds the aggregates kept decoded in memory
	// in front of the store, the most recently used. Default 10,000.
	StateCacheAggregates int
	// FetchMaxBytes bounds the bytes of commands fetched at once, from
	// all partitions or one (Kafka's fetch.max.bytes and
	// max.partition.fetch.bytes). What is fetched is held decoded until
	// it is decided, each record with its headers, at about 15 times its
	// size on the wire: this bounds memory while catching up on a
	// backlog. Default 2 MiB (franz-go's 50 MiB took the processor to
	// 330-360 MiB catching up, 2 MiB to 210-220 MiB at the same speed).
	FetchMaxBytes int32
	// HeapFloor is the heap the process may grow to before it collects
	// garbage while its live heap is below half of it (package
	// heapfloor): a processor keeps little live (about 30 MiB), and
	// collecting every time its heap doubled took 8% of its CPU at 6,000
	// commands/s, this about 5%, for about 13 MiB more resident memory.
	// With much state (2 M aggregates) the live heap is past half the
	// floor and nothing changes. GOGC or GOMEMLIMIT in the environment
	// override it. Default 64 MiB; negative: Go's default collector.
	HeapFloor int64
	// Observer receives metrics events. Default none.
	Observer Observer
	// StallTimeout is how long the processor may hold no partition while
	// some have no owner, or hold partitions whose commands wait while it
	// decides none, before Ready says it is not ready. Default 30s.
	StallTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger

	// transactionalIDPerProcess says the TransactionalID is the default
	// one of a process, which a restart does not keep.
	transactionalIDPerProcess bool
	// bootstrapChunk bounds the records of a bootstrap one transaction
	// writes. Default defaultBootstrapChunk; tests make it small.
	bootstrapChunk int
}

// defaultBootstrapChunk keeps a transaction that writes a chunk of a
// bootstrap well within its timeout: the changelog takes a few hundred
// thousand records a second here.
const defaultBootstrapChunk = 20000

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
		c.transactionalIDPerProcess = true
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(os.TempDir(), "kappa-state")
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
	if c.TransactionInterval == 0 {
		c.TransactionInterval = 100 * time.Millisecond
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.StateCacheBytes == 0 {
		c.StateCacheBytes = 16 << 20
	}
	if c.bootstrapChunk == 0 {
		c.bootstrapChunk = defaultBootstrapChunk
	}
	if c.StateCacheAggregates == 0 {
		c.StateCacheAggregates = 10000
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = 2 << 20
	}
	if c.HeapFloor == 0 {
		c.HeapFloor = 64 << 20
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
	if c.Topics.Commands == "" || c.Topics.Events == "" || c.Topics.State == "" {
		errs = append(errs, errors.New("processor: Topics needs commands, events and state"))
	}
	if c.StateCacheBytes < 0 || c.StateCacheAggregates < 0 {
		errs = append(errs, errors.New("processor: StateCacheBytes and StateCacheAggregates must not be negative"))
	}
	if c.FetchMaxBytes < 0 {
		errs = append(errs, errors.New("processor: FetchMaxBytes must not be negative (0 takes the default, 2 MiB)"))
	}
	if c.MaxBatchRecords < 0 {
		errs = append(errs, errors.New("processor: MaxBatchRecords must be positive"))
	}
	if c.SessionTimeout < 0 || c.TransactionTimeout < 0 || c.IdempotencyWindow < 0 || c.StallTimeout < 0 {
		errs = append(errs, errors.New("processor: SessionTimeout, TransactionTimeout, IdempotencyWindow and StallTimeout must not be negative"))
	}
	if c.TransactionTimeout > 0 && c.TransactionInterval >= c.TransactionTimeout {
		errs = append(errs, fmt.Errorf("processor: TransactionInterval %s must be shorter than TransactionTimeout %s", c.TransactionInterval, c.TransactionTimeout))
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

	// partitions holds the state of each owned partition that is
	// restored; only the Run goroutine touches it, and store.
	partitions map[int32]*owned
	store      *store
	// cache holds committed states of aggregates of restored partitions;
	// a partition's entries go whenever it is restored.
	cache *stateCache
	// records are those of the events topic, reused from one transaction
	// to the next; only the Run goroutine touches them.
	records kafka.Records
	// storeReads counts reads of aggregates from the store until the next
	// commit reports them.
	storeReads int
	// builds are the filters of aggregates being built from the store,
	// which must end before it closes.
	builds    sync.WaitGroup
	buildsCtx context.Context

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
		partitions: map[int32]*owned{},
		revoked:    map[int32]bool{},
	}, nil
}

// Run decides commands until ctx ends. A transactional session that fails
// (the broker went away while a transaction was open, and franz-go cannot
// go on with it) is closed, the state it decided from is dropped, and a new
// session takes over after a backoff: with the same transactional id, it
// fences the old one's open transaction.
func (p *Processor) Run(ctx context.Context) error {
	var st *store
	var err error
	if p.cfg.transactionalIDPerProcess {
		st, err = openSlotStore(filepath.Join(p.cfg.StateDir, p.cfg.Group), p.cfg.StateCacheBytes, p.log)
	} else {
		st, err = openStore(filepath.Join(p.cfg.StateDir, p.cfg.TransactionalID), p.cfg.StateCacheBytes, p.log)
	}
	if err != nil {
		return err
	}
	p.log.Info("state store opened", "dir", st.dir)
	p.store = st
	p.cache = newStateCache(p.cfg.StateCacheAggregates)
	var stopBuilds context.CancelFunc
	p.buildsCtx, stopBuilds = context.WithCancel(ctx)
	defer func() {
		stopBuilds()
		p.builds.Wait()
		if err := st.close(); err != nil {
			p.log.Error("close the state store", "err", err)
		}
	}()
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
		p.partitions = map[int32]*owned{}
		p.log.Error("the transactional session failed; a new one takes over", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return nil
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
		kgo.FetchMaxBytes(p.cfg.FetchMaxBytes), kgo.FetchMaxPartitionBytes(p.cfg.FetchMaxBytes),
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

	var (
		lastBegin      time.Time
		lastSize       int
		restoreBackoff = 100 * time.Millisecond
	)
	for {
		if wait := p.cfg.batchDelay(lastSize) - time.Since(lastBegin); wait > 0 {
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
		lastBegin, lastSize = time.Now(), len(records)
		// A restore takes as long as the changelog it reads; it is not
		// bounded by the transaction's timeout (a restore that cannot
		// finish within it would otherwise never finish), and what it
		// has read stays in the store if it is interrupted.
		if err := p.restoreMissing(ctx, records); err != nil {
			// Without state no decision is safe: abort so the commands
			// are redelivered, and try again after a while.
			p.log.Error("restore aggregate state", "err", err, "retry_in", restoreBackoff)
			endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.TransactionTimeout)
			_, endErr := sess.End(endCtx, kgo.TryAbort)
			cancel()
			if endErr != nil {
				return fmt.Errorf("abort after failed restore: %w", endErr)
			}
			if !sleep(ctx, restoreBackoff) {
				return nil
			}
			restoreBackoff = min(2*restoreBackoff, 5*time.Second)
			continue
		}
		restoreBackoff = 100 * time.Millisecond
		// Commands in hand are decided and committed even if ctx ends
		// meanwhile, so that SIGTERM leaves nothing for a restart to redo;
		// past its timeout the broker aborts a transaction anyway.
		txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.TransactionTimeout)
		err := p.transact(txCtx, sess, records)
		cancel()
		if err != nil {
			return err
		}
	}
}

// sleep waits for d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// batchDelayPerCommand is how much longer the next transaction waits for
// each command of the last one. Commands that arrive at rate r while a
// transaction of length T runs make batches of about r·T/(1 - r·d): at 100
// commands a second and a 10 ms transaction, one command and a wait of
// 1 ms; from 1/d = 1000 a second, the wait reaches TransactionInterval.
const batchDelayPerCommand = time.Millisecond

// batchDelay is how long after the start of a transaction of lastSize
// commands the next one may start.
func (c *Config) batchDelay(lastSize int) time.Duration {
	if c.TransactionInterval < 0 {
		return 0
	}
	return min(c.TransactionInterval, time.Duration(lastSize)*batchDelayPerCommand)
}

func (p *Processor) forgetRevoked() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part := range p.revoked {
		delete(p.partitions, part)
		delete(p.revoked, part)
	}
}

// nextOffsets returns, per partition, the offset after the last of records.
func nextOffsets(records []*kgo.Record) map[int32]int64 {
	next := map[int32]int64{}
	for _, r := range records {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	return next
}
