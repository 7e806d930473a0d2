package kafka_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
)

// requestCounter counts the requests a client writes, by key.
type requestCounter struct{ addPartitions, endTxn atomic.Int64 }

func (c *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	switch kmsg.Key(key) {
	case kmsg.AddPartitionsToTxn:
		c.addPartitions.Add(1)
	case kmsg.EndTxn:
		c.endTxn.Add(1)
	}
}

// TestTransactionsStayAtVersion1 runs against the local stack, which
// leaves Kafka 4's default, transaction.version 2: a transactional session
// from the edge still adds its partitions to the transaction itself, the
// protocol of version 1, and its transaction commits.
func TestTransactionsStayAtVersion1(t *testing.T) {
	conn := kappatest.Kafka(t)
	ctx := t.Context()
	admin, err := conn.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if v := finalizedTransactionVersion(ctx, t, admin); v < 2 {
		t.Skipf("the cluster finalized transaction.version %d; this test needs 2, Kafka 4's default (`make stack` leaves it)", v)
	}
	name := kappatest.Name(t, "txv")
	topics := kafka.TopicsFor(name)
	if _, err := kafka.EnsureTopics(ctx, admin, topics, kafka.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	counter := &requestCounter{}
	sess, err := conn.NewGroupTransactSession(kgo.ConsumerGroup(name), kgo.ConsumeTopics(topics.Commands),
		kgo.TransactionalID(name), kgo.DefaultProduceTopic(topics.Events), kgo.WithHooks(counter))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := sess.ProduceSync(ctx, &kgo.Record{Value: []byte("decided")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil || !committed {
		t.Fatalf("end transaction: committed %t, %v", committed, err)
	}
	if counter.addPartitions.Load() == 0 || counter.endTxn.Load() != 1 {
		t.Errorf("the session wrote %d AddPartitionsToTxn and %d EndTxn; want at least one and one: version 1 adds partitions itself",
			counter.addPartitions.Load(), counter.endTxn.Load())
	}

	reader, err := conn.NewClient(kgo.ConsumeTopics(topics.Events), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	readCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fetches := reader.PollRecords(readCtx, 1)
	if err := fetches.Err0(); err != nil {
		t.Fatalf("read the committed record: %v", err)
	}
	if records := fetches.Records(); len(records) != 1 || string(records[0].Value) != "decided" {
		t.Fatalf("read committed %d records, want the one the transaction wrote", len(records))
	}
}

// finalizedTransactionVersion asks a broker which transaction.version the
// cluster finalized; 0 if it names none.
func finalizedTransactionVersion(ctx context.Context, t *testing.T, cl *kgo.Client) int16 {
	t.Helper()
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName, req.ClientSoftwareVersion = "kappa-test", "1"
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" {
			return f.MaxVersionLevel
		}
	}
	return 0
}
