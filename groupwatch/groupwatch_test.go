package groupwatch_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kappa-cqrs/kappa/groupwatch"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
)

type fixture struct {
	t      *testing.T
	broker *kfake.Cluster
	plain  *kgo.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "events", "other"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	plain, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)
	return &fixture{t: t, broker: broker, plain: plain}
}

// member joins group consuming topic and polls until it holds partitions.
func (f *fixture) member(group, topic string) *kgo.Client {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.broker.ListenAddrs()...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(cl.Close)
	ctx, cancel := context.WithCancel(f.t.Context())
	f.t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	return cl
}

func (f *fixture) watch(group string) *groupwatch.Watch {
	f.t.Helper()
	w, err := groupwatch.New(groupwatch.Config{Kafka: kafka.Connection{Brokers: f.broker.ListenAddrs()}, Group: group, Topic: "events",
		StallTimeout: 300 * time.Millisecond, CheckInterval: 50 * time.Millisecond})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(w.Close)
	return w
}

func (f *fixture) produce(n int) {
	f.t.Helper()
	for i := range n {
		r := &kgo.Record{Topic: "events", Partition: int32(i % 2), Value: []byte("x")}
		if err := f.plain.ProduceSync(f.t.Context(), r).FirstErr(); err != nil {
			f.t.Fatal(err)
		}
	}
}

// verdict checks until Ready's reason is want ("" for ready).
func verdict(t *testing.T, w *groupwatch.Watch, want string) {
	t.Helper()
	kappatest.Eventually(t, 20*time.Second, 20*time.Millisecond, func() error {
		w.Check(t.Context())
		err := w.Ready()
		var nr *groupwatch.NotReady
		switch {
		case want == "" && err == nil:
			return nil
		case errors.As(err, &nr) && nr.Reason == want:
			return nil
		}
		return fmt.Errorf("verdict %w, want reason %q", err, want)
	})
}

func memberID(cl *kgo.Client) func() string {
	return func() string { id, _ := cl.GroupMetadata(); return id }
}

func TestNotReadyUntilChecked(t *testing.T) {
	f := newFixture(t)
	var nr *groupwatch.NotReady
	if err := f.watch("g").Ready(); !errors.As(err, &nr) || nr.Reason != groupwatch.ReasonStarting {
		t.Fatalf("before any check: %v, want reason starting", err)
	}
}

func TestMemberThatAppliesIsReady(t *testing.T) {
	f := newFixture(t)
	cl := f.member("g", "events")
	w := f.watch("g")
	w.SetMember(memberID(cl))
	verdict(t, w, "")
	f.produce(4)
	// The member applies everything and says so.
	w.Progressed(0, 2)
	w.Progressed(1, 2)
	verdict(t, w, "")
}

func TestMemberWithLagAndNoProgressIsStalled(t *testing.T) {
	f := newFixture(t)
	cl := f.member("g", "events")
	w := f.watch("g")
	w.SetMember(memberID(cl))
	verdict(t, w, "")
	f.produce(4)
	verdict(t, w, groupwatch.ReasonStalled)
	// It catches up: committed offsets move, the verdict follows.
	var commitErr error
	cl.CommitOffsetsSync(t.Context(), map[string]map[int32]kgo.EpochOffset{"events": {0: {Epoch: -1, Offset: 2}, 1: {Epoch: -1, Offset: 2}}},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			commitErr = err
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					commitErr = errors.Join(commitErr, kerr.ErrorForCode(p.ErrorCode))
				}
			}
		})
	if commitErr != nil {
		t.Fatal(commitErr)
	}
	verdict(t, w, "")
}

func TestMemberOutsideItsGroupIsNotReady(t *testing.T) {
	f := newFixture(t)
	f.member("g", "events")
	w := f.watch("g")
	w.SetMember(func() string { return "expelled-member" })
	verdict(t, w, groupwatch.ReasonOutside)
}

func TestMemberHoldingNothingWhilePartitionsHaveNoOwner(t *testing.T) {
	f := newFixture(t)
	// A member of the group that subscribed to another topic: the
	// watched topic's partitions have no owner and it holds none of them.
	cl := f.member("g", "other")
	w := f.watch("g")
	w.SetMember(memberID(cl))
	verdict(t, w, groupwatch.ReasonIdle)
}
