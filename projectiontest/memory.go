package projectiontest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/kappa-cqrs/kappa/schemas"
)

// ErrRefused is the error MemorySink refuses an event with; its Permanent
// reports it.
var ErrRefused = errors.New("refused: the read models cannot hold the event")

// MemorySink is a projection held in memory: the events and outcomes it
// applied, each with the number of times it applied it, so that a
// duplicate shows, and its positions. Like the real sinks it keeps its
// positions with its data: a batch changes both, or neither, under one
// lock. A second instance on the same store is the same MemorySink, since
// it holds nothing else. It refuses, as Postgres's read models do, cart
// lines of a quantity below 1 or a price below 0.
//
// It passes the suite, and stands in for a real sink in unit tests.
type MemorySink struct {
	mu      sync.Mutex
	next    map[string]map[int32]int64 // topic -> partition -> next offset
	applied Contents
	events  map[string]bool // ids of the events applied, which redrive skips
	topics  map[string]string
}

// NewMemorySink returns an empty MemorySink.
func NewMemorySink() *MemorySink {
	return &MemorySink{next: map[string]map[int32]int64{}, applied: Contents{}, events: map[string]bool{}, topics: map[string]string{}}
}

// Resume returns the next offset of each partition of topic it applied
// records of.
func (s *MemorySink) Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[int32]int64{}
	for _, p := range partitions {
		if o, ok := s.next[topic][p]; ok {
			next[p] = o
		}
	}
	return next, nil
}

type partitionOf struct {
	topic     string
	partition int32
}

// Apply applies the records of batch at or after their partition's next
// offset, and moves the positions past them, parked records included. A
// refused event fails the whole batch, which then changes nothing.
func (s *MemorySink) Apply(ctx context.Context, batch []schemas.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[partitionOf]int64{}
	var fresh []schemas.Record
	for _, r := range batch {
		at := partitionOf{r.Topic, r.Position.Partition}
		n, ok := next[at]
		if !ok {
			n = s.next[r.Topic][r.Position.Partition]
		}
		if r.Position.Offset < n {
			continue // applied by an earlier batch
		}
		if err := refusal(r); err != nil {
			return err
		}
		next[at] = r.Position.Offset + 1
		fresh = append(fresh, r)
	}
	for _, r := range fresh {
		s.record(r)
	}
	for at, n := range next {
		if s.next[at.topic] == nil {
			s.next[at.topic] = map[int32]int64{}
		}
		s.next[at.topic][at.partition] = n
	}
	return nil
}

// ApplyRedriven applies the events of batch it does not hold yet, and
// moves no position. A refused event fails the whole batch.
func (s *MemorySink) ApplyRedriven(ctx context.Context, batch []schemas.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var fresh []schemas.Record
	seen := map[string]bool{}
	for _, r := range batch {
		if !isEvent(r) || s.events[r.Envelope.ID] || seen[r.Envelope.ID] {
			continue
		}
		if err := refusal(r); err != nil {
			return err
		}
		seen[r.Envelope.ID] = true
		fresh = append(fresh, r)
	}
	for _, r := range fresh {
		s.record(r)
	}
	return nil
}

// record adds what r changes; s.mu is held.
func (s *MemorySink) record(r schemas.Record) {
	e, at := r.Envelope, r.Position
	switch p := r.Payload.(type) {
	case schemas.Parked:
		// Only its position counts.
	case schemas.Outcome:
		if p.CommandID != "" {
			s.applied[fmt.Sprintf("outcome %s %s %s at %s", p.CommandID, p.AggregateID, p.Status, at)]++
		}
	default:
		s.applied[fmt.Sprintf("event %s %s %s v%d at %s", e.ID, e.Type, e.AggregateID, e.AggregateVersion, at)]++
		s.events[e.ID] = true
	}
}

// refusal is the error r is refused with, or nil.
func refusal(r schemas.Record) error {
	var why string
	switch p := r.Payload.(type) {
	case schemas.CartProductAddedV1:
		if p.Quantity < 1 || p.UnitPriceCents < 0 {
			why = fmt.Sprintf("a line of %d at %d cents", p.Quantity, p.UnitPriceCents)
		}
	case schemas.CartProductRemovedV1:
		if p.Quantity < 1 {
			why = fmt.Sprintf("a removal of %d", p.Quantity)
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: %s at %s/%s", ErrRefused, why, r.Topic, r.Position)
}

// Permanent reports ErrRefused.
func (s *MemorySink) Permanent(err error) bool { return errors.Is(err, ErrRefused) }

// BindTopic binds topic to topicID unless it is bound already, and returns
// the id it is bound to.
func (s *MemorySink) BindTopic(ctx context.Context, topic, topicID string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.topics[topic]; !ok {
		s.topics[topic] = topicID
	}
	return s.topics[topic], nil
}

// Contents returns what the sink holds: a key per event, "event <id>
// <type> <aggregate> v<version> at <partition>:<offset>", and per outcome,
// "outcome <command id> <aggregate> <status> at <partition>:<offset>",
// with the number of times it was applied.
func (s *MemorySink) Contents() Contents {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.applied)
}
