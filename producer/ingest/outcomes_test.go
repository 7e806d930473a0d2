package ingest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The ingest reads the events topic only while requests wait for
// outcomes, starting again from its end when the next one comes. Against
// the real broker, with a stand-in processor that writes another command's
// outcome before each real one: every waiting request gets its own
// outcome, the first one, those after the reader stopped in between, and
// concurrent ones.
func TestWaitingRequestsGetTheirOutcomes(t *testing.T) {
	conn := kappatest.Kafka(t)
	names := kafka.TopicsFor(kappatest.Name(t, "ing"))
	ctx := t.Context()
	admin, err := conn.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	if _, err := adm.CreateTopics(ctx, 3, 1, nil, names.Commands, names.Events); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), names.Commands, names.Events) })

	// The first write to a topic just created can wait for its leader
	// longer than the default 5 s on a broker that shares two cores with
	// the other packages' tests; what is tested here is the outcomes.
	pub, err := ingest.New(ingest.Config{Kafka: conn, Topics: names, FollowIdle: time.Millisecond, ProduceTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	go func() { _ = pub.RunOutcomes(ctx) }()
	go decide(ctx, t, conn, names)

	qty, price := int64(1), int64(5)
	waitFor := func(round int, cart string) {
		cmd, err := ingest.NewCommand(schemas.AddProductToCart, cart, "", "", schemas.AddProductV1{ProductID: "p1", Quantity: &qty, UnitPriceCents: &price})
		if err != nil {
			t.Error(err)
			return
		}
		results, err := pub.Publish(ctx, []ingest.Command{cmd}, 20*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		if o := results[0].Outcome; o == nil || o.CommandID != cmd.ID || o.Status != schemas.StatusAccepted {
			t.Errorf("round %d, %s: outcome %+v, want command %s accepted", round, cart, o, cmd.ID)
		}
	}
	for round := range 5 {
		// Commands nobody waits for, whose outcomes the reader skips.
		checkout, err := ingest.NewCommand(schemas.CheckoutCart, "cart-x", "", "", schemas.CheckoutV1{CustomerID: "c"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, []ingest.Command{checkout}, 0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, cart := range []string{"cart-1", "cart-2", "cart-3"} {
			wg.Add(1)
			go func() { defer wg.Done(); waitFor(round, cart) }()
		}
		wg.Wait()
		if !t.Failed() {
			kappatest.Eventually(t, 10*time.Second, time.Millisecond, func() error {
				if pub.Following() {
					return errors.New("the events topic is still read with no request waiting")
				}
				return nil
			})
		}
	}
}

// decide stands in for the processors: for each command, an outcome of
// some other command, an event of the command whose payload would read as
// a rejection if the ingest took it for an outcome, then the command's own
// outcome.
func decide(ctx context.Context, t *testing.T, conn kafka.Connection, names kafka.Topics) {
	cl, err := conn.NewClient(kgo.ConsumeTopics(names.Commands),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			env, err := kafka.Envelope(r)
			if err != nil {
				t.Error(err)
				return
			}
			for _, w := range []struct{ id, typ, status string }{
				{uuid.NewString(), schemas.OutcomeType, schemas.StatusAccepted},
				{env.ID, schemas.CartProductAdded, schemas.StatusRejected},
				{env.ID, schemas.OutcomeType, schemas.StatusAccepted},
			} {
				data, _ := json.Marshal(schemas.Outcome{CommandID: w.id, CommandType: env.Type, AggregateID: env.AggregateID,
					Status: w.status, CommandPosition: kafka.Position(r)})
				out := schemas.Envelope{ID: uuid.NewString(), Type: w.typ, Source: "test", Time: time.Now(),
					SchemaVersion: 1, AggregateID: env.AggregateID, CommandID: w.id, Data: data}
				if err := cl.ProduceSync(ctx, kafka.Record(names.Events, r.Partition, out)).FirstErr(); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
			}
		})
	}
}
