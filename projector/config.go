package projector

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kappa-cqrs/kappa/kafka"
)

// rebalanceTimeout is how long the group waits for members to join a
// rebalance: franz-go's default, which Kappa does not change.
const rebalanceTimeout = 60 * time.Second

// Config configures a Projector. Zero values take the documented defaults.
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
	// (waiting then costs nothing and makes the batch bigger). Default:
	// the sink's, if it is a Pacer, else 200ms.
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

// Pacer is an optional interface of a Sink that knows how long its
// batches should be collected: a store that wants few, large writes
// (ClickHouse) waits longer than one whose writes are cheap (Postgres).
type Pacer interface {
	DefaultFlushInterval() time.Duration
}

func (c *Config) setDefaults(sink Sink) {
	if c.MaxBatchRecords == 0 {
		c.MaxBatchRecords = 10000
	}
	if p, ok := sink.(Pacer); ok && c.FlushInterval == 0 {
		c.FlushInterval = p.DefaultFlushInterval()
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

// WithDefaults returns the configuration with every zero value replaced by
// its default for sink (nil: no sink's preference), as New uses it.
func (c Config) WithDefaults(sink Sink) Config {
	c.setDefaults(sink)
	return c
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Kafka.Validate()}
	for name, v := range map[string]string{"Group": c.Group, "Topic": c.Topic, "DeadLetterTopic": c.DeadLetterTopic, "Projection": c.Projection} {
		if v == "" {
			errs = append(errs, fmt.Errorf("projector: %s is required", name))
		}
	}
	if c.MaxBatchRecords < 0 {
		errs = append(errs, errors.New("projector: MaxBatchRecords must be positive"))
	}
	if c.FlushInterval < 0 || c.MaxRetryBackoff < 0 || c.SessionTimeout < 0 || c.StallTimeout < 0 || c.MaxBlock < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("projector: durations must not be negative"))
	}
	if c.PoisonAttempts < 0 {
		errs = append(errs, errors.New("projector: PoisonAttempts must be positive"))
	}
	if c.MaxBlock >= rebalanceTimeout {
		// Past the rebalance timeout the group expels a member that
		// blocks a rebalance while it may still write.
		errs = append(errs, fmt.Errorf("projector: MaxBlock %s must stay below the group's rebalance timeout %s", c.MaxBlock, rebalanceTimeout))
	}
	return errors.Join(errs...)
}
