package kafka_test

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
)

func TestEnsureCreatesOnceAndChecksCoPartitioning(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	names := kafka.TopicsFor("t")
	for range 2 { // the second call finds everything in place
		n, err := kafka.EnsureTopics(t.Context(), cl, names, kafka.TopicConfig{Partitions: 3})
		if err != nil || n != 3 {
			t.Fatalf("Ensure = %d, %v; want 3 partitions", n, err)
		}
	}
	// Events with another partition count would misroute a processor's writes.
	other := kafka.TopicsFor("u")
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 2, -1, nil, other.Events); err != nil {
		t.Fatal(err)
	}
	if _, err := kafka.EnsureTopics(t.Context(), cl, other, kafka.TopicConfig{Partitions: 3}); !errors.Is(err, kafka.ErrPartitionMismatch) {
		t.Fatalf("Ensure over mismatched topics: %v, want ErrPartitionMismatch", err)
	}
}
