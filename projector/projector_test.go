package projector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projector"
	"github.com/kappa-cqrs/kappa/schemas"
)

var errRefused = errors.New("refused for its contents")

// memorySink keeps positions with the data, as the real sinks do, and can
// be told to fail: every attempt until a time (an outage), or always for
// records of one product (a constraint the data breaks).
type memorySink struct {
	mu        sync.Mutex
	next      map[int32]int64
	applied   []string // event ids, in apply order
	downUntil time.Time
	refuse    string // product id the store refuses
	topicID   string // the id of the topic the store was built from
}

func (s *memorySink) BindTopic(_ context.Context, _, topicID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topicID == "" {
		s.topicID = topicID
	}
	return s.topicID, nil
}

func (s *memorySink) Resume(_ context.Context, _ string, _ []int32) (map[int32]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int32]int64{}
	for p, o := range s.next {
		out[p] = o
	}
	return out, nil
}

func (s *memorySink) Apply(_ context.Context, batch []schemas.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Before(s.downUntil) {
		return errors.New("store unavailable")
	}
	for _, r := range batch {
		if p, ok := r.Payload.(schemas.CartProductAddedV1); ok && p.ProductID == s.refuse {
			return fmt.Errorf("%w: %s", errRefused, r.Envelope.ID)
		}
	}
	for _, r := range batch {
		if r.Position.Offset < s.next[r.Position.Partition] {
			continue
		}
		s.next[r.Position.Partition] = r.Position.Offset + 1
		if _, parked := r.Payload.(schemas.Parked); !parked {
			s.applied = append(s.applied, r.Envelope.ID)
		}
	}
	return nil
}

func (s *memorySink) Permanent(err error) bool { return errors.Is(err, errRefused) }

func (s *memorySink) appliedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.applied...)
}

func event(id, aggregate, product string, version int64) *kgo.Record {
	data, _ := json.Marshal(schemas.CartProductAddedV1{ProductID: product, Quantity: 1, UnitPriceCents: 1})
	return kafka.Record("events", 0, schemas.Envelope{ID: id, Type: schemas.CartProductAdded, Source: "test",
		Time: time.Now(), SchemaVersion: 1, AggregateID: aggregate, AggregateVersion: version, Data: data})
}

// TestConsumerParksInOrderAndSurvivesOutages runs the projection runtime on
// the in-process broker: an outage longer than MaxBlock, an undecodable
// record, and a record the store refuses. Every good record is applied
// exactly once, in order per aggregate, and nothing of a parked aggregate
// overtakes its parked record.
// brokerWith starts an in-process broker with the topics "events" and
// "events.dlq", one partition each, and the records in "events".
func brokerWith(t *testing.T, records ...*kgo.Record) *kfake.Cluster {
	t.Helper()
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events", "events.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	produce(t, broker, records...)
	return broker
}

func TestConsumerParksInOrderAndSurvivesOutages(t *testing.T) {
	records := []*kgo.Record{
		event("a1", "cart-a", "p1", 1),
		event("b1", "cart-b", "p1", 1),
		{Topic: "events", Key: []byte("cart-c"), Value: []byte("no envelope")}, // undecodable
		event("c2", "cart-c", "p1", 2),                                         // behind the undecodable one
		event("a2", "cart-a", "refused", 2),                                    // the store refuses it
		event("b2", "cart-b", "p2", 2),                                         // flows
		event("a3", "cart-a", "p3", 3),                                         // behind a2
		event("b3", "cart-b", "p3", 3),                                         // flows
	}
	broker := brokerWith(t, records...)
	sink := &memorySink{next: map[int32]int64{}, downUntil: time.Now().Add(700 * time.Millisecond), refuse: "refused"}
	c, err := projector.New(projector.Config{
		Kafka: kafka.Connection{Brokers: broker.ListenAddrs()}, Group: "g", Topic: "events", DeadLetterTopic: "events.dlq", Projection: "memory",
		FlushInterval: 10 * time.Millisecond, MaxBlock: 200 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	want := []string{"a1", "b1", "b2", "b3"}
	kappatest.Eventually(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := sink.appliedIDs(); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("applied %v, want %v", got, want)
		}
		return nil
	})
	var book *deadletter.Book
	kappatest.Eventually(t, 20*time.Second, 10*time.Millisecond, func() error {
		book, err = deadletter.Load(t.Context(), kafka.Connection{Brokers: broker.ListenAddrs()}, "events.dlq", "memory")
		if err != nil {
			return err
		}
		if open, _, _, _ := book.Counts(); open != 4 {
			return fmt.Errorf("%d open dead letters, want 4", open)
		}
		return nil
	})
	open := book.Open()
	if len(open["cart-c"]) != 2 || len(open["cart-a"]) != 2 || open["cart-a"][0].Behind != nil || open["cart-a"][1].Behind == nil {
		t.Fatalf("parked: %+v", open)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := sink.appliedIDs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after shutdown applied %v, want %v", got, want)
	}
}

// TestAStoreOfAnotherTopicStopsTheConsumer: a store built from an earlier
// incarnation of the topic (deleted and created again, or truncated) must
// not resume there: with its positions beyond the topic's end, or with the
// topic's id changed, the consumer stops with an error that says so,
// having applied nothing.
func TestAStoreOfAnotherTopicStopsTheConsumer(t *testing.T) {
	for _, tc := range []struct {
		name string
		sink *memorySink
		want error
	}{
		{"positions beyond the end", &memorySink{next: map[int32]int64{0: 10}}, projector.ErrPositionsAheadOfTopic},
		{"another topic id", &memorySink{next: map[int32]int64{0: 1}, topicID: "id-of-the-deleted-topic"}, projector.ErrTopicRecreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker := brokerWith(t, event("a1", "cart-a", "p1", 1), event("a2", "cart-a", "p1", 2), event("a3", "cart-a", "p1", 3))
			c, err := projector.New(projector.Config{
				Kafka: kafka.Connection{Brokers: broker.ListenAddrs()}, Group: "g", Topic: "events", DeadLetterTopic: "events.dlq", Projection: "memory",
				FlushInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}, tc.sink)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := c.Run(ctx); !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v", err, tc.want)
			}
			if got := tc.sink.appliedIDs(); len(got) != 0 {
				t.Fatalf("applied %v from a topic the store does not belong to", got)
			}
		})
	}
}
