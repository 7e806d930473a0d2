package deadletter_test

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
)

// parkedAt is a dead-letter record of projection p at offset off of
// partition 0, parked from events offset origin; behind names the origin
// of the entry it waits behind, or is empty for a poison record.
func parkedAt(off int64, aggregate string, origin int64, behind string) *kgo.Record {
	h := []kgo.RecordHeader{
		{Key: deadletter.HeaderProjection, Value: []byte("p")},
		{Key: deadletter.HeaderReason, Value: []byte("test")},
		{Key: deadletter.HeaderTopic, Value: []byte("events")},
		{Key: deadletter.HeaderPartition, Value: []byte("0")},
		{Key: deadletter.HeaderOffset, Value: []byte(strconv.FormatInt(origin, 10))},
	}
	if behind != "" {
		h = append(h, kgo.RecordHeader{Key: deadletter.HeaderBehind, Value: []byte(behind)})
	}
	return &kgo.Record{Topic: "dlq", Partition: 0, Offset: off, Key: []byte(aggregate), Headers: h}
}

func markerAt(off int64, aggregate, action string, resolves int64) *kgo.Record {
	return &kgo.Record{Topic: "dlq", Partition: 0, Offset: off, Key: []byte(aggregate), Headers: []kgo.RecordHeader{
		{Key: deadletter.HeaderProjection, Value: []byte("p")},
		{Key: deadletter.HeaderAction, Value: []byte(action)},
		{Key: deadletter.HeaderResolves, Value: []byte("0:" + strconv.FormatInt(resolves, 10))},
	}}
}

// An aggregate is orphaned once every open entry of it waits only behind
// a resolved one; a resolution observed twice counts once and signals.
func TestOrphanedAggregates(t *testing.T) {
	b := deadletter.NewBook("p")
	b.Observe(parkedAt(0, "a", 10, ""))
	b.Observe(parkedAt(1, "a", 11, "0:10"))
	b.Observe(parkedAt(2, "b", 12, ""))
	if got := b.Orphaned(); len(got) != 0 {
		t.Fatalf("Orphaned() = %v with every poison open, want none", got)
	}
	select {
	case <-b.Resolved():
		t.Fatal("resolved signalled before any resolution")
	default:
	}

	b.Observe(markerAt(3, "a", deadletter.ActionDiscarded, 0))
	if got := b.Orphaned(); len(got) != 1 || got[0] != "a" {
		t.Fatalf("Orphaned() = %v after the poison of a was discarded, want [a]", got)
	}
	select {
	case <-b.Resolved():
	default:
		t.Fatal("no resolved signal after a discard")
	}

	b.Observe(markerAt(4, "a", deadletter.ActionRedriven, 1))
	b.Observe(markerAt(5, "a", deadletter.ActionRedriven, 1)) // a racing second redrive
	if got := b.Orphaned(); len(got) != 0 {
		t.Fatalf("Orphaned() = %v with a fully resolved, want none", got)
	}
	if open, parked, redriven, discarded := b.Counts(); open != 1 || parked != 3 || redriven != 1 || discarded != 1 {
		t.Errorf("Counts() = open %d, parked %d, redriven %d, discarded %d; want 1, 3, 1, 1", open, parked, redriven, discarded)
	}
}
