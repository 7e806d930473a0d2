// Package projector is the runtime every projection runs on: one member of
// a consumer group that polls the events topic, batches, parks what it
// cannot apply, applies the rest to its sink, and commits. The next batch
// is polled and decoded while the sink applies the previous one. The sink,
// not Kafka's committed offsets, decides where consumption resumes after an
// assignment, because a sink is not part of Kafka transactions: only its
// own contents say what it has. Offsets are still committed to Kafka after
// each applied batch so that lag tooling works.
//
// Files by concern: projector.go the member's life (join, fenced, join
// again), pipeline.go polling and batching, apply.go applying with one
// retry policy, isolate.go poison isolation, park.go what to park,
// resume.go resume positions, topic checks and fencing.
package projector

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
	"github.com/kappa-cqrs/kappa/schemas"
)

// parking is what the pipeline needs of the dead-letter topic;
// deadletter.Parker is the implementation.
type parking interface {
	// Park writes records to the dead-letter topic and returns how many.
	Park(ctx context.Context, letters []deadletter.Parking) (int, error)
	// Behind returns the origin position of the parked record an
	// aggregate's next records must wait behind.
	Behind(aggregate string) (origin string, parked bool)
	// CaughtUp waits until what Behind knows is the whole topic.
	CaughtUp(ctx context.Context) error
	// Counts are the book's counts, for the ParkObserver.
	Counts() (open, parked, redriven, discarded int)
}

// Projector runs one projection's consumer-group member.
type Projector struct {
	cfg     Config
	sink    Sink
	log     *slog.Logger
	healthy atomic.Bool
	applied atomic.Int64
	parker  parking
	// client (and admin around it) is of no group: it reads offsets,
	// topic ids and the group's members for the current member.
	client *kgo.Client
	admin  *kadm.Client
	watch  *groupwatch.Watch
	stop   context.CancelCauseFunc // ends Run with an error found in a callback

	mu    sync.Mutex
	owned map[int32]bool // partitions the current member holds
}

// New returns a Projector for sink, or the configuration's problems.
func New(cfg Config, sink Sink) (*Projector, error) {
	cfg.setDefaults(sink)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Projector{cfg: cfg, sink: sink, log: cfg.Logger.With("projection", cfg.Projection), owned: map[int32]bool{}}, nil
}

// Healthy reports whether the last attempt to apply a batch succeeded.
func (p *Projector) Healthy() bool { return p.healthy.Load() }

// Ready returns nil when the member does its share: the sink takes its
// writes, and it is a member of its group that holds partitions while
// some have no owner and applies the records that wait on those it holds
// (groupwatch). Otherwise the error says why.
func (p *Projector) Ready() error {
	if !p.healthy.Load() {
		return errors.New("the last attempt to apply a batch failed; retrying")
	}
	p.mu.Lock()
	w := p.watch
	p.mu.Unlock()
	if w == nil {
		return errors.New("not started")
	}
	return w.Ready()
}

// AppliedRecords counts records applied since start.
func (p *Projector) AppliedRecords() int64 { return p.applied.Load() }

// Run consumes until ctx ends, then flushes the batch in hand (within
// ShutdownTimeout) and returns. Should that flush fail, the sink's own
// positions make the redelivery harmless. A member that the sink fences
// off (it lost its partitions while it was stopped) drops what it holds
// and joins the group again as a new member.
func (p *Projector) Run(ctx context.Context) error {
	parker, err := deadletter.NewParker(p.cfg.Kafka, p.cfg.DeadLetterTopic, p.cfg.Projection, p.log)
	if err != nil {
		return err
	}
	defer parker.Close()
	p.parker = parker
	plain, err := p.cfg.Kafka.NewClient()
	if err != nil {
		return fmt.Errorf("create kafka client for %s: %w", p.cfg.Projection, err)
	}
	defer plain.Close()
	p.client, p.admin = plain, kadm.NewClient(plain)
	watch, err := groupwatch.New(groupwatch.Config{Kafka: p.cfg.Kafka, Group: p.cfg.Group, Topic: p.cfg.Topic,
		StallTimeout: p.cfg.StallTimeout, Observer: p.cfg.Observer, Logger: p.log})
	if err != nil {
		return err
	}
	defer watch.Close()
	p.mu.Lock()
	p.watch = watch
	p.mu.Unlock()
	ctx, p.stop = context.WithCancelCause(ctx)
	defer p.stop(nil)

	var background sync.WaitGroup
	defer background.Wait()
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	// The book of parked records follows the dead-letter topic for as long
	// as the projector runs; assignments wait until it has caught up.
	background.Go(func() {
		if err := parker.Follow(bgCtx); err != nil {
			p.log.Warn("follow dead letters", "err", err)
		}
	})
	background.Go(func() { _ = watch.Run(bgCtx) })
	if applier, ok := p.sink.(deadletter.Applier); ok {
		background.Go(func() { parker.RedriveOrphans(bgCtx, applier, p.owns) })
	}

	p.healthy.Store(true)
	rejoin := newBackoff(time.Second, p.cfg.MaxRetryBackoff)
	for {
		err := p.member(ctx)
		if cause := context.Cause(ctx); errors.Is(cause, ErrPositionsAheadOfTopic) || errors.Is(cause, ErrTopicRecreated) {
			return cause
		}
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errFenced) {
			return err
		}
		p.log.Warn("fenced off: the group gave this member's partitions to another while it was not running; its batches are dropped and it joins again", "err", err)
		if err := rejoin.wait(ctx); err != nil {
			return nil //nolint:nilerr // shutting down is not a failure
		}
	}
}

// member runs one membership of the group: a client, its assignments and
// the poll loop, until ctx ends or the sink fences it off.
func (p *Projector) member(ctx context.Context) error {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.OnPartitionsRevoked(p.disown),
		kgo.OnPartitionsLost(p.disown),
	}
	if p.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(p.cfg.InstanceID))
	}
	// The group may assign partitions before NewClient has returned; the
	// callback waits for the client it belongs to.
	var cl *kgo.Client
	created := make(chan struct{})
	if brokenForFaultTests {
		// The negative control of the fault suite: Kafka's offsets decide,
		// committed every few seconds, like a naive sink connector.
		p.log.Warn("BROKEN BUILD: resuming from Kafka's committed offsets with auto-commit")
	} else {
		opts = append(opts, kgo.DisableAutoCommit(), kgo.AdjustFetchOffsetsFn(func(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			select {
			case <-created:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return p.resumeFromSink(ctx, cl, assigned)
		}))
	}
	cl, err := p.cfg.Kafka.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka client for %s: %w", p.cfg.Projection, err)
	}
	close(created)
	defer func() {
		cl.Close()
		p.mu.Lock()
		clear(p.owned)
		p.mu.Unlock()
	}()
	p.watch.SetMember(func() string { id, _ := cl.GroupMetadata(); return id })
	return p.loop(ctx, cl)
}

// disown forgets partitions the member gave up or lost.
func (p *Projector) disown(_ context.Context, _ *kgo.Client, gone map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, parts := range gone {
		for _, part := range parts {
			delete(p.owned, part)
		}
	}
}

// owns reports whether the current member holds a partition.
func (p *Projector) owns(partition int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owned[partition]
}

func commandsThrough(batch []schemas.Record) map[int32]int64 {
	through := map[int32]int64{}
	for _, r := range batch {
		if o, ok := r.Payload.(schemas.Outcome); ok {
			part := o.CommandPosition.Partition
			if cur, seen := through[part]; !seen || o.CommandPosition.Offset > cur {
				through[part] = o.CommandPosition.Offset
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
