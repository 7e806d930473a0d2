package projectiontest

import (
	"slices"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projector"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Topic is the topic of the suite's records.
const Topic = "events"

// partitions are those the suite asks Resume about. The stream has no
// record in partition 3, which must stay at the start.
var partitions = []int32{0, 1, 2, 3}

// command is one accepted command of the suite's stream.
type command struct {
	partition int32
	aggregate string
	payloads  []any
}

// script is the stream's commands in the order they are consumed, built
// afresh for each use.
func script() []command {
	lines := func(ls ...schemas.OrderLine) []schemas.OrderLine { return ls }
	return []command{
		{0, "c1", []any{schemas.CartProductAddedV1{ProductID: "p1", Quantity: 2, UnitPriceCents: 100}}},
		{1, "a1", []any{schemas.ArticlePublishedV1{AuthorID: "u1", Title: "First", Body: "Body", Tags: []string{"go"}}}},
		{2, "c2", []any{
			schemas.CartProductAddedV1{ProductID: "p1", Quantity: 3, UnitPriceCents: 100},
			schemas.CartCheckedOutV1{CustomerID: "u8", OrderID: "c2", TotalCents: 300,
				Lines: lines(schemas.OrderLine{ProductID: "p1", Quantity: 3, UnitPriceCents: 100})},
		}},
		{0, "c1", []any{schemas.CartProductAddedV1{ProductID: "p2", Quantity: 1, UnitPriceCents: 250}}},
		{1, "c3", []any{
			schemas.CartProductAddedV1{ProductID: "p3", Quantity: 5, UnitPriceCents: 999},
			schemas.CartProductAddedV1{ProductID: "p3", Quantity: 1, UnitPriceCents: 999},
		}},
		{2, "a2", []any{schemas.ArticlePublishedV1{AuthorID: "u1", Title: "Other", Body: "Body", Tags: nil}}},
		{0, "c1", []any{schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 1}}},
		{1, "a1", []any{schemas.ArticleUpdatedV1{Title: new("Second"), Tags: &[]string{"go", "kafka"}}}},
		{1, "c3", []any{schemas.CartProductRemovedV1{ProductID: "p3", Quantity: 6}}},
		{2, "a2", []any{schemas.ArticleUpdatedV1{Body: new("Body 2")}}},
		{0, "c1", []any{schemas.CartCheckedOutV1{CustomerID: "u9", OrderID: "c1", TotalCents: 350,
			Lines: lines(schemas.OrderLine{ProductID: "p1", Quantity: 1, UnitPriceCents: 100},
				schemas.OrderLine{ProductID: "p2", Quantity: 1, UnitPriceCents: 250})}}},
	}
}

// Stream returns the records the suite applies, on Topic, which
// Harness.Want describes. Eleven commands on three partitions, each
// followed by its outcome, with a gap for the transaction marker (kappatest.Stream):
//
//	partition 0: cart c1: add p1 2x100 (v1); add p2 1x250 (v2); remove 1 p1 (v3);
//	             check out for u9, order c1, 350 cents, lines p1 1x100 and p2 1x250 (v4)
//	partition 1: article a1: published by u1, "First", body "Body", tags [go] (v1);
//	             cart c3: add p3 5x999 and add p3 1x999 in one command (v1, v2);
//	             article a1: title "Second", tags [go kafka] (v2);
//	             cart c3: remove 6 p3, which empties the line (v3)
//	partition 2: cart c2: add p1 3x100 and check out for u8, order c2, 300 cents, in one command (v1, v2);
//	             article a2: published by u1, "Other", body "Body", no tags (v1);
//	             article a2: body "Body 2" (v2)
//
// The commands alternate between partitions in that order (c1, a1, c2,
// c1, c3, a2, c1, a1, c3, a2, c1); event i of command n of partition p
// has id cmd-p-n-event-i, and its time is 10:00 UTC on 22 November 2026
// plus one minute per event of the stream so far (10:01 to 10:13).
func Stream() *kappatest.Stream { return build(script()) }

func build(cmds []command) *kappatest.Stream {
	st := kappatest.NewStream(Topic)
	for _, c := range cmds {
		st.Command(c.partition, c.aggregate, c.payloads...)
	}
	return st
}

// poisoned returns the stream with one more command in its middle, on a
// new aggregate of partition 1, whose only event is payload, and the
// index of that event among the records.
func poisoned(payload any) ([]schemas.Record, int) {
	cmds := slices.Insert(script(), 5, command{1, "refused", []any{payload}})
	records := build(cmds).Records
	return records, slices.IndexFunc(records, func(r schemas.Record) bool {
		return r.Envelope.AggregateID == "refused" && isEvent(r)
	})
}

// parkedFrom is where the parked and redrive subtests park aggregates:
// cart c1 from its second event on, and article a2's update, the last
// event of its partition.
var parkedFrom = map[string]int64{"c1": 2, "a2": 2}

// parkBehind returns records with the events of the aggregates of from,
// from the given versions on, parked as the projector parks the records
// behind a poisoned one (outcomes are never parked), and the records it
// parked.
func parkBehind(records []schemas.Record, from map[string]int64) (variant, originals []schemas.Record) {
	for _, r := range records {
		v, ok := from[r.Envelope.AggregateID]
		if isEvent(r) && ok && r.Envelope.AggregateVersion >= v {
			originals = append(originals, r)
			r = parked(r, projector.ErrParkedBehind.Error())
		}
		variant = append(variant, r)
	}
	return variant, originals
}

// parked is r as the projector applies a record it parked: its topic and
// position, no envelope.
func parked(r schemas.Record, reason string) schemas.Record {
	return schemas.Record{Topic: r.Topic, Position: r.Position, Payload: schemas.Parked{Reason: reason}}
}

// without returns records less those at the positions of drop.
func without(records, drop []schemas.Record) []schemas.Record {
	return slices.DeleteFunc(slices.Clone(records), func(r schemas.Record) bool {
		return slices.ContainsFunc(drop, func(d schemas.Record) bool { return d.Position == r.Position })
	})
}

// isEvent reports a record that carries an event: not an outcome, not parked.
func isEvent(r schemas.Record) bool {
	switch r.Payload.(type) {
	case schemas.Outcome, schemas.Parked:
		return false
	}
	return true
}

// byAggregate groups records by aggregate, in the order aggregates first
// appear, as a redrive applies the entries of the dead-letter topic.
func byAggregate(records []schemas.Record) [][]schemas.Record {
	var groups [][]schemas.Record
	index := map[string]int{}
	for _, r := range records {
		i, ok := index[r.Envelope.AggregateID]
		if !ok {
			i = len(groups)
			index[r.Envelope.AggregateID] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], r)
	}
	return groups
}
