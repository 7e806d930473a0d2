package roles

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Projections names the projections whose dead letters `kappa dlq` handles.
var Projections = []string{"clickhouse", "postgres"}

// DLQList prints the open dead letters of a projection and its counts.
func DLQList(ctx context.Context, cfg Config, projection string, w io.Writer) error {
	cfg.setDefaults()
	book, err := deadletter.Load(ctx, cfg.Kafka, cfg.Topics().EventsDeadLetter, projection)
	if err != nil {
		return err
	}
	open, parked, redriven, discarded := book.Counts()
	fmt.Fprintf(w, "projection %s: %d open, %d parked in all, %d redriven, %d discarded\n", projection, open, parked, redriven, discarded)
	if open == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DLQ POSITION\tAGGREGATE\tORIGIN\tTYPE\tREASON")
	entries := book.Open()
	for _, agg := range slices.Sorted(maps.Keys(entries)) {
		for _, e := range entries[agg] {
			fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\n", e.Position, e.AggregateID, e.OriginTopic, e.Origin, headerOr(e.Record, schemas.HeaderType, "-"), e.Reason)
		}
	}
	return tw.Flush()
}

// DLQShow prints one dead-letter record: its headers and value.
func DLQShow(ctx context.Context, cfg Config, pos schemas.Position, w io.Writer) error {
	cfg.setDefaults()
	topic := cfg.Topics().EventsDeadLetter
	cl, err := cfg.Kafka.NewClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {pos.Partition: kgo.NewOffset().At(pos.Offset)}}))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("no dead letter at %s in %s", pos, topic)
		}
		var found *kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			if found == nil && r.Offset == pos.Offset {
				found = r
			}
		})
		if found != nil {
			fmt.Fprintf(w, "position  %s/%s\nkey       %s\ntimestamp %s\n", topic, pos, found.Key, found.Timestamp.UTC().Format(time.RFC3339Nano))
			for _, h := range found.Headers {
				fmt.Fprintf(w, "header    %s: %s\n", h.Key, h.Value)
			}
			fmt.Fprintf(w, "value     %s\n", found.Value)
			return nil
		}
	}
}

// DLQRedrive applies the open dead letters of a projection that decode now,
// in order, and marks them redriven.
func DLQRedrive(ctx context.Context, cfg Config, projection string, f deadletter.Filter, dryRun bool, w io.Writer) error {
	return dlqResolve(ctx, cfg, projection, w, dryRun, func(cl *kgo.Client, book *deadletter.Book) ([]deadletter.Outcome, error) {
		store, closeStore, err := openApplier(ctx, cfg, projection)
		if err != nil {
			return nil, err
		}
		defer closeStore()
		return deadletter.Redrive(ctx, cl, cfg.Topics().EventsDeadLetter, book, f, store, dryRun)
	})
}

// DLQDiscard marks open dead letters of a projection as discarded.
func DLQDiscard(ctx context.Context, cfg Config, projection string, f deadletter.Filter, dryRun bool, w io.Writer) error {
	return dlqResolve(ctx, cfg, projection, w, dryRun, func(cl *kgo.Client, book *deadletter.Book) ([]deadletter.Outcome, error) {
		return deadletter.Discard(ctx, cl, cfg.Topics().EventsDeadLetter, book, f, dryRun)
	})
}

func dlqResolve(ctx context.Context, cfg Config, projection string, w io.Writer, dryRun bool,
	resolve func(*kgo.Client, *deadletter.Book) ([]deadletter.Outcome, error)) error {
	cfg.setDefaults()
	book, err := deadletter.Load(ctx, cfg.Kafka, cfg.Topics().EventsDeadLetter, projection)
	if err != nil {
		return err
	}
	cl, err := cfg.Kafka.NewClient(kafka.DurableProducer()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	outcomes, err := resolve(cl, book)
	prefix := ""
	if dryRun {
		prefix = "would be "
	}
	for _, o := range outcomes {
		fmt.Fprintf(w, "%s %s (aggregate %s, origin %s/%s): %s%s %s\n", projection, o.Entry.Position, o.Entry.AggregateID, o.Entry.OriginTopic, o.Entry.Origin, prefix, o.Action, o.Detail)
	}
	if len(outcomes) == 0 {
		fmt.Fprintf(w, "%s: no open dead letters match\n", projection)
	}
	return err
}

func openApplier(ctx context.Context, cfg Config, projection string) (deadletter.Applier, func(), error) {
	switch projection {
	case "postgres":
		s, err := postgres.Open(ctx, cfg.Postgres)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	case "clickhouse":
		s, err := clickhouse.Open(ctx, cfg.ClickHouse)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown projection %q; one of %v", projection, Projections)
}

func headerOr(r *kgo.Record, key, missing string) string {
	if v, ok := kafka.Header(r, key); ok {
		return v
	}
	return missing
}
