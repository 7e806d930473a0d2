// Package ingest is the command intake. Intake (intake.go) owns a request's
// way in: idempotency keys and their request hash, answering retries, and
// publishing. Publisher writes validated commands to the commands topic
// with an idempotent producer and acks=all, and watches the outcome
// records of the events topic so that a caller can wait for a command's
// decision. Nothing here knows HTTP.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// ErrUnavailable reports that Kafka did not acknowledge commands in time;
// they must be treated as not written.
var ErrUnavailable = errors.New("kafka unavailable")

// Config configures a Publisher. Zero values take the documented defaults.
type Config struct {
	// Kafka is how ingest reaches Kafka. Required.
	Kafka kafka.Connection
	// Topics names the topics. Required.
	Topics kafka.Topics
	// Source is written as ce_source. Default "kappa/ingest".
	Source string
	// ProduceTimeout bounds how long a command may wait for Kafka's
	// acknowledgement before the caller is told it is unavailable.
	// Default 5s.
	ProduceTimeout time.Duration
	// FollowIdle is how long the events topic is still read for outcomes
	// after the last request that waited for them. Default 1s.
	FollowIdle time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Source == "" {
		c.Source = "kappa/ingest"
	}
	if c.ProduceTimeout == 0 {
		c.ProduceTimeout = 5 * time.Second
	}
	if c.FollowIdle == 0 {
		c.FollowIdle = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Kafka.Validate()}
	if c.Topics.Commands == "" || c.Topics.Events == "" {
		errs = append(errs, errors.New("ingest: Topics needs commands and events"))
	}
	if c.ProduceTimeout < time.Second {
		// franz-go refuses record delivery timeouts below one second.
		errs = append(errs, errors.New("ingest: ProduceTimeout must be at least 1s"))
	}
	return errors.Join(errs...)
}

// Command is a validated command ready to be written.
type Command struct {
	ID          string
	Type        string
	AggregateID string
	Tenant      string
	// IdempotencyKey marks a command whose retries must not be decided
	// again; the processors remember its outcome by command id.
	IdempotencyKey string
	// ExpectedVersion, if set, is the version the aggregate must be at
	// (schemas.ExpectedVersionOK).
	ExpectedVersion *int64
	// Data is the payload, one of the schemas command types, as JSON
	// (NewCommand encodes it).
	Data []byte
}

// Result is what happened to one command of a Publish call: its position
// if Kafka acknowledged it, or the error; and its outcome if the caller
// asked to wait for it and it arrived in time.
type Result struct {
	Position schemas.Position
	Err      error
	Outcome  *schemas.Outcome
}

// Publisher writes commands and watches their outcomes.
type Publisher struct {
	cfg      Config
	log      *slog.Logger
	producer *kgo.Client
	watchers sync.Map // command id -> chan schemas.Outcome
	watching atomic.Int64

	// The events topic is read for outcomes only while requests wait for
	// them: reading every outcome cost the ingest a quarter of its CPU. follow
	// guards outcomes, the consumer while there is one; wake tells
	// RunOutcomes that there is one again.
	follow     sync.Mutex
	outcomes   *kgo.Client
	lastWaiter time.Time
	wake       chan struct{}
}

// New connects a Publisher. It does not wait for Kafka to be reachable.
func New(cfg Config) (*Publisher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := cfg.Kafka.NewClient(append(kafka.DurableProducer(),
		kgo.DefaultProduceTopic(cfg.Topics.Commands),
		kgo.RecordDeliveryTimeout(cfg.ProduceTimeout),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		return nil, fmt.Errorf("create kafka producer: %w", err)
	}
	return &Publisher{cfg: cfg, log: cfg.Logger, producer: cl, wake: make(chan struct{}, 1)}, nil
}

// Close flushes nothing: every Publish already waited for its records.
func (p *Publisher) Close() {
	p.follow.Lock()
	defer p.follow.Unlock()
	if p.outcomes != nil {
		p.outcomes.Close()
		p.outcomes = nil
	}
	p.producer.Close()
}

// NewCommandID returns a fresh, time-ordered command id.
func NewCommandID() string { return uuid.Must(uuid.NewV7()).String() }

// Publish writes commands and waits until Kafka has acknowledged each, at
// most ProduceTimeout. A command is durable if and only if its Result has no
// error; the returned error is ErrUnavailable if any is not. With
// awaitOutcome > 0 it then waits up to that long for the processors'
// decisions.
func (p *Publisher) Publish(ctx context.Context, cmds []Command, awaitOutcome time.Duration) ([]Result, error) {
	var watch *watch
	if awaitOutcome > 0 {
		ids := make([]string, len(cmds))
		for i, c := range cmds {
			ids[i] = c.ID
		}
		var err error
		if watch, err = p.watch(ctx, ids); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		defer watch.close()
	}
	results, err := p.produce(ctx, cmds)
	if err != nil || watch == nil {
		return results, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, awaitOutcome)
	defer cancel()
	outcomes := watch.wait(waitCtx)
	for i, c := range cmds {
		if o, ok := outcomes[c.ID]; ok {
			results[i].Outcome = &o
		}
	}
	return results, nil
}

func (p *Publisher) produce(ctx context.Context, cmds []Command) ([]Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ProduceTimeout)
	defer cancel()
	results := make([]Result, len(cmds))
	var wg sync.WaitGroup
	now := time.Now().UTC()
	for i, c := range cmds {
		env := schemas.Envelope{
			ID: c.ID, Type: c.Type, Source: p.cfg.Source, Time: now, SchemaVersion: 1,
			AggregateID: c.AggregateID, Tenant: c.Tenant, IdempotencyKey: c.IdempotencyKey, ExpectedVersion: c.ExpectedVersion, Data: c.Data,
		}
		rec := kafka.Record(p.cfg.Topics.Commands, 0, env)
		wg.Add(1)
		p.producer.Produce(ctx, rec, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				results[i].Err = err
				return
			}
			results[i].Position = kafka.Position(r)
		})
	}
	wg.Wait()
	var failed int
	var first error
	for _, r := range results {
		if r.Err != nil {
			failed++
			if first == nil {
				first = r.Err
			}
		}
	}
	if failed > 0 {
		return results, fmt.Errorf("%w: %d of %d commands not acknowledged: %w", ErrUnavailable, failed, len(cmds), first)
	}
	return results, nil
}

// Ready reports whether a broker answers within ctx.
func (p *Publisher) Ready(ctx context.Context) error {
	return p.producer.Ping(ctx)
}

// watch registers interest in the outcomes of commands before they are
// published, so that no outcome can slip past. If the events topic is not
// being read, a consumer starts at its current end offsets first: the
// commands are not written yet, so their outcomes can only come after.
func (p *Publisher) watch(ctx context.Context, ids []string) (*watch, error) {
	p.follow.Lock()
	defer p.follow.Unlock()
	if p.outcomes == nil {
		cl, err := p.followFromEnd(ctx)
		if err != nil {
			return nil, err
		}
		p.outcomes = cl
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	w := &watch{p: p, ids: ids, ch: make(chan schemas.Outcome, len(ids))}
	p.watching.Add(1)
	for _, id := range ids {
		p.watchers.Store(id, w.ch)
	}
	return w, nil
}

// followFromEnd returns a consumer of the events topic from its end offsets
// as they are now.
func (p *Publisher) followFromEnd(ctx context.Context) (*kgo.Client, error) {
	topic := p.cfg.Topics.Events
	ends, err := kafka.EndOffsets(ctx, p.producer, topic)
	if err != nil {
		return nil, err
	}
	from := map[int32]kgo.Offset{}
	for part, o := range ends {
		from[part] = kgo.NewOffset().At(o)
	}
	cl, err := p.cfg.Kafka.NewClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return nil, fmt.Errorf("create outcomes consumer: %w", err)
	}
	return cl, nil
}

// Following reports whether the events topic is being read for outcomes now.
func (p *Publisher) Following() bool {
	p.follow.Lock()
	defer p.follow.Unlock()
	return p.outcomes != nil
}

// stopIfIdle closes the outcomes consumer once no request has waited for
// FollowIdle, and reports whether it did.
func (p *Publisher) stopIfIdle(cl *kgo.Client) bool {
	p.follow.Lock()
	defer p.follow.Unlock()
	if p.outcomes != cl || p.watching.Load() > 0 || time.Since(p.lastWaiter) <= p.cfg.FollowIdle {
		return false
	}
	cl.Close()
	p.outcomes = nil
	return true
}

type watch struct {
	p   *Publisher
	ids []string
	ch  chan schemas.Outcome
}

// wait returns the outcomes that arrived before ctx ended, by command id.
func (w *watch) wait(ctx context.Context) map[string]schemas.Outcome {
	got := make(map[string]schemas.Outcome, len(w.ids))
	for len(got) < len(w.ids) {
		select {
		case o := <-w.ch:
			got[o.CommandID] = o
		case <-ctx.Done():
			return got
		}
	}
	return got
}

func (w *watch) close() {
	w.p.follow.Lock()
	defer w.p.follow.Unlock()
	for _, id := range w.ids {
		w.p.watchers.Delete(id)
	}
	w.p.watching.Add(-1)
	w.p.lastWaiter = time.Now()
}

// RunOutcomes hands outcomes to the requests that wait for them, until ctx
// ends. The events topic is read while requests wait, from the end
// offsets the first of them saw.
func (p *Publisher) RunOutcomes(ctx context.Context) error {
	for {
		p.follow.Lock()
		cl := p.outcomes
		p.follow.Unlock()
		if cl == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-p.wake:
			}
			continue
		}
		pollCtx, cancel := context.WithTimeout(ctx, p.cfg.FollowIdle)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		select {
		case <-ctx.Done():
			return nil
		default:
		}
		if fetches.IsClientClosed() || p.stopIfIdle(cl) {
			continue
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				p.log.Warn("fetch outcomes", "topic", topic, "partition", partition, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			// Most records are events, and most commands are sent
			// without waiting: decode only the outcomes a watcher asked
			// for, found by their headers.
			if p.watching.Load() == 0 {
				return
			}
			id, ok := outcomeCommandID(r)
			if !ok {
				return
			}
			if _, watched := p.watchers.Load(id); !watched {
				return
			}
			o, err := schemas.DecodeOutcome(r.Value)
			if err != nil {
				p.log.Warn("skip undecodable outcome", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			if ch, ok := p.watchers.Load(o.CommandID); ok {
				select {
				case ch.(chan schemas.Outcome) <- o:
				default: // a redelivered outcome for a full watch
				}
			}
		})
	}
}

// outcomeCommandID returns the command id of an outcome record; ok is false
// for events and anything else.
func outcomeCommandID(r *kgo.Record) (id string, ok bool) {
	isOutcome := false
	for _, h := range r.Headers {
		switch h.Key {
		case schemas.HeaderCommandID:
			id = string(h.Value)
		case schemas.HeaderType:
			isOutcome = string(h.Value) == schemas.OutcomeType
		}
	}
	return id, isOutcome && id != ""
}

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
