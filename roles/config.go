package roles

import (
	"errors"
	"fmt"

	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projector"
)

// The component configurations as the roles run them: the component's own
// Config with what follows from the shared settings filled in.

func (c Config) processor(observer processor.Observer) processor.Config {
	p := c.Processor
	p.Kafka, p.Topics, p.Logger = c.Kafka, c.Topics(), c.Logger
	if p.Group == "" {
		p.Group = c.GroupPrefix + "-processor"
	}
	if observer != nil {
		p.Observer = observer
	}
	return p
}

// projector returns the configuration of the named projection.
func (c Config) projector(name string, observer projector.Observer) projector.Config {
	p := c.ClickHouseProjector
	if name == "postgres" {
		p = c.PostgresProjector
	}
	names := c.Topics()
	p.Kafka, p.Topic, p.DeadLetterTopic, p.Projection, p.Logger = c.Kafka, names.Events, names.EventsDeadLetter, name, c.Logger
	if p.Group == "" {
		p.Group = c.GroupPrefix + "-" + name
	}
	if observer != nil {
		p.Observer = observer
	}
	return p
}

func (c Config) publisher() ingest.Config {
	p := c.Publisher
	p.Kafka, p.Topics, p.Logger = c.Kafka, c.Topics(), c.Logger
	return p
}

func (c Config) intake(bus ingest.Bus, keys ingest.Keys, outcomes ingest.Outcomes) ingest.IntakeConfig {
	in := c.Intake
	in.Bus, in.Keys, in.Outcomes, in.Logger = bus, keys, outcomes, c.Logger
	return in
}

// Validate reports every problem of every component at once, each with
// its defaults applied as the roles would run it, and the rules that span
// components.
func (c Config) Validate() error {
	c.setDefaults()
	errs := []error{c.Kafka.Validate()}
	proc := c.processor(nil).WithDefaults()
	errs = append(errs, proc.Validate())
	for _, name := range []string{"clickhouse", "postgres"} {
		var pacer projector.Sink = (*clickhouse.Store)(nil)
		if name == "postgres" {
			pacer = (*postgres.Store)(nil)
		}
		p := c.projector(name, nil).WithDefaults(pacer)
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("the %s projection: %w", name, err))
		}
	}
	pub := c.publisher().WithDefaults()
	errs = append(errs, pub.Validate())
	in := c.intake(nopBus{}, nil, nil).WithDefaults()
	errs = append(errs, in.Validate())
	a := c.API.WithDefaults()
	errs = append(errs, a.Validate())
	topics := c.CreateTopics.WithDefaults()
	if topics.Partitions < 1 {
		errs = append(errs, errors.New("topics: Partitions must be positive"))
	}
	if in.IdempotencyWindow > proc.IdempotencyWindow {
		// A retry after the processors forgot the first outcome, but
		// while ingest still binds the key, would be decided again.
		errs = append(errs, fmt.Errorf("the intake's IdempotencyWindow %s must not exceed the processors' %s", in.IdempotencyWindow, proc.IdempotencyWindow))
	}
	h := c.HTTP.WithDefaults()
	errs = append(errs, h.Validate())
	if a.MaxWait >= h.WriteTimeout {
		// A request that waits must still have time to answer.
		errs = append(errs, fmt.Errorf("api: MaxWait %s must be shorter than the HTTP WriteTimeout %s", a.MaxWait, h.WriteTimeout))
	}
	if a.MaxBodyBytes > a.MaxBatchBodyBytes {
		errs = append(errs, fmt.Errorf("api: MaxBodyBytes %d must not exceed MaxBatchBodyBytes %d", a.MaxBodyBytes, a.MaxBatchBodyBytes))
	}
	return errors.Join(errs...)
}

// ValidateStores checks the configurations of the stores a role opens.
func (c Config) ValidateStores(pg, ch bool) error {
	c.setDefaults()
	var errs []error
	if pg {
		p := c.Postgres.WithDefaults()
		errs = append(errs, p.Validate())
	}
	if ch {
		s := c.ClickHouse.WithDefaults()
		errs = append(errs, s.Validate())
	}
	return errors.Join(errs...)
}

// nopBus stands in for the publisher when only the intake's settings are
// validated.
type nopBus struct{ ingest.Bus }

// WithDefaults returns the configuration with the roles' own defaults
// applied (the components' come with their Configs).
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
