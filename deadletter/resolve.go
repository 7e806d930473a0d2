package deadletter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Outcome says what a redrive or discard did, or would do, to one entry.
type Outcome struct {
	Entry  Entry
	Action string // ActionRedriven, ActionDiscarded, or "kept" with Detail
	Detail string
}

// Applier writes fixed records into a projection's store; the Postgres
// and ClickHouse stores implement it.
type Applier interface {
	ApplyRedriven(ctx context.Context, batch []schemas.Record) error
}

// Filter selects entries: one aggregate, one dead-letter position, or all.
type Filter struct {
	AggregateID string
	Position    *schemas.Position
}

func (f Filter) match(e Entry) bool {
	if f.AggregateID != "" && e.AggregateID != f.AggregateID {
		return false
	}
	return f.Position == nil || e.Position == *f.Position
}

// Redrive decodes the open entries that match, aggregate by aggregate in
// dead-letter order, applies them through apply, then marks them redriven.
// An aggregate stops at its first entry that still cannot be decoded: that
// entry and those behind it stay parked, so order holds. With dryRun
// nothing is applied or marked.
func Redrive(ctx context.Context, cl *kgo.Client, topic string, book *Book, f Filter, apply Applier, dryRun bool) ([]Outcome, error) {
	var outcomes []Outcome
	open := book.Open()
	for _, agg := range sortedKeys(open) {
		entries := open[agg]
		var ready []Entry
		var records []schemas.Record
		for _, e := range entries {
			if !f.match(e) {
				continue
			}
			rec, err := kafka.Decode(e.Record)
			if err != nil {
				outcomes = append(outcomes, Outcome{Entry: e, Action: "kept", Detail: "still cannot be decoded: " + err.Error()})
				break
			}
			ready = append(ready, e)
			records = append(records, rec)
		}
		if len(ready) == 0 {
			continue
		}
		if !dryRun {
			if err := apply.ApplyRedriven(ctx, records); err != nil {
				return outcomes, fmt.Errorf("apply %d records of %s: %w", len(records), agg, err)
			}
			if err := mark(ctx, cl, topic, book, ready, ActionRedriven); err != nil {
				return outcomes, err
			}
		}
		for _, e := range ready {
			outcomes = append(outcomes, Outcome{Entry: e, Action: ActionRedriven})
		}
	}
	return outcomes, nil
}

// Discard marks the open entries that match as discarded: they will never
// be applied, and their aggregates flow again once nothing else of theirs
// is parked. A filter is required, so that one command cannot discard a
// whole topic by accident.
func Discard(ctx context.Context, cl *kgo.Client, topic string, book *Book, f Filter, dryRun bool) ([]Outcome, error) {
	if f.AggregateID == "" && f.Position == nil {
		return nil, errors.New("discard needs an aggregate or a position")
	}
	var chosen []Entry
	open := book.Open()
	for _, agg := range sortedKeys(open) {
		for _, e := range open[agg] {
			if f.match(e) {
				chosen = append(chosen, e)
			}
		}
	}
	if !dryRun && len(chosen) > 0 {
		if err := mark(ctx, cl, topic, book, chosen, ActionDiscarded); err != nil {
			return nil, err
		}
	}
	outcomes := make([]Outcome, len(chosen))
	for i, e := range chosen {
		outcomes[i] = Outcome{Entry: e, Action: ActionDiscarded}
	}
	return outcomes, nil
}

// mark writes resolution markers, keyed like the entries so that they land
// on the same dead-letter partition, after them, and enters them in the
// book at once, so that nothing resolved is taken for open again.
func mark(ctx context.Context, cl *kgo.Client, topic string, book *Book, entries []Entry, action string) error {
	records := make([]*kgo.Record, len(entries))
	for i, e := range entries {
		records[i] = marker(topic, e, action)
	}
	results := cl.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		return fmt.Errorf("mark %d dead letters %s: %w", len(records), action, err)
	}
	for _, res := range results {
		book.Observe(res.Record)
	}
	return nil
}

func sortedKeys(open map[string][]Entry) []string {
	return slices.Sorted(maps.Keys(open))
}
