package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The processor's cases: Kappa's processor deciding a topic of commands,
// and its baseline, the bare transactional consume-produce loop the brief
// names. Both read the same commands, written once before the cases run.

// processorCases are the cases that read the bench's commands.
var processorCases = map[string]bool{"processor-kappa": true, "processor-bare": true}

// commandTopics are the topics of the bench's commands: only Commands is
// written before the cases; each case writes its own events and state.
func commandTopics(cfg Config) kafka.Topics { return kafka.TopicsFor(cfg.Prefix + "-commands") }

// caseTopics are a processor case's own topics, reading the bench's
// commands.
func caseTopics(cfg Config, name string) kafka.Topics {
	t := kafka.TopicsFor(cfg.Prefix + "-" + name)
	t.Commands = commandTopics(cfg).Commands
	return t
}

// commands makes the bench's commands, like the load test's mix where it
// matters to the processor: most touch aggregates it has seen (products
// added to 100,000 carts), the rest create one (articles published).
func commands(cfg Config) []*kgo.Record {
	rng := rand.New(rand.NewPCG(13, 17))
	now := time.Now().UTC()
	topic := commandTopics(cfg).Commands
	records := make([]*kgo.Record, cfg.Events)
	for i := range records {
		env := schemas.Envelope{ID: ingest.NewCommandID(), Source: "bench", Time: now, SchemaVersion: 1}
		var data any
		if rng.IntN(100) < 70 {
			product := rng.IntN(50)
			quantity, price := int64(1+rng.IntN(3)), int64(100+25*product)
			env.Type, env.AggregateID = schemas.AddProductToCart, fmt.Sprintf("cart-%d", rng.IntN(100000))
			data = schemas.AddProductV1{ProductID: fmt.Sprintf("p%d", product), Quantity: &quantity, UnitPriceCents: &price}
		} else {
			env.Type, env.AggregateID = schemas.PublishArticle, fmt.Sprintf("article-%d", i)
			data = schemas.PublishArticleV1{AuthorID: fmt.Sprintf("author-%d", rng.IntN(100)), Title: fmt.Sprintf("Article %d", i), Body: "A body of some length.", Tags: []string{"bench"}}
		}
		env.Data, _ = json.Marshal(data)
		h := fnv.New32a()
		_, _ = h.Write([]byte(schemas.KeyOf(env)))
		records[i] = kafka.Record(topic, int32(h.Sum32()%uint32(cfg.Partitions)), env)
	}
	return records
}

// produceCommands writes the bench's commands to their topic.
func produceCommands(ctx context.Context, cfg Config) error {
	return produceAll(ctx, cfg, commands(cfg))
}

// ensureCaseTopics creates a processor case's events and state topics.
func ensureCaseTopics(ctx context.Context, cfg Config, name string) error {
	cl, err := cfg.kafka().NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = kafka.EnsureTopics(ctx, cl, caseTopics(cfg, name), kafka.TopicConfig{Partitions: cfg.Partitions})
	return err
}

// decidedCounter counts the commands of committed transactions.
type decidedCounter struct{ decided atomic.Int64 }

func (c *decidedCounter) Committed(tx processor.Transaction) {
	c.decided.Add(int64(tx.Accepted + tx.Rejected + tx.Duplicates))
}
func (*decidedCounter) Aborted()                    {}
func (*decidedCounter) Restored(int, time.Duration) {}
func (*decidedCounter) Held(processor.Held)         {}

// processorKappa runs Kappa's processor, with its state store in a new
// directory, until every command is decided.
func processorKappa(ctx context.Context, cfg Config, name string, log *slog.Logger) (CaseResult, error) {
	if err := ensureCaseTopics(ctx, cfg, name); err != nil {
		return CaseResult{}, err
	}
	dir, err := os.MkdirTemp("", "kappa-bench-state-")
	if err != nil {
		return CaseResult{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	counter := &decidedCounter{}
	p, err := processor.New(processor.Config{Kafka: cfg.kafka(), Topics: caseTopics(cfg, name), Group: cfg.Prefix + "-" + name,
		StateDir: dir, Observer: counter, Logger: log})
	if err != nil {
		return CaseResult{}, err
	}
	elapsed, err := runUntil(ctx, p.Run, func() bool { return counter.decided.Load() >= int64(cfg.Events) })
	if err != nil {
		return CaseResult{}, fmt.Errorf("processor stopped: %w", err)
	}
	return CaseResult{Case: name, Rows: cfg.Events, Seconds: elapsed.Seconds(),
		Note: "decides, writes events, outcomes and the state changelog, one transaction per poll"}, nil
}

// processorBare is the floor: a franz-go transactional session that reads
// the commands and writes each one's bytes, unread, to its events topic,
// with the offsets in the same transaction, one transaction per poll.
func processorBare(ctx context.Context, cfg Config, name string) (CaseResult, error) {
	if err := ensureCaseTopics(ctx, cfg, name); err != nil {
		return CaseResult{}, err
	}
	topics := caseTopics(cfg, name)
	sess, err := cfg.kafka().NewGroupTransactSession(kgo.ConsumerGroup(cfg.Prefix+"-"+name), kgo.ConsumeTopics(topics.Commands),
		kgo.TransactionalID(cfg.Prefix+"-"+name), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RecordPartitioner(kgo.ManualPartitioner()), kafka.Compression())
	if err != nil {
		return CaseResult{}, err
	}
	defer sess.Close()
	start := time.Now()
	for moved := 0; moved < cfg.Events; {
		fetches := sess.PollRecords(ctx, 5000)
		if err := ctx.Err(); err != nil {
			return CaseResult{}, err
		}
		if err := fetches.Err0(); err != nil {
			return CaseResult{}, err
		}
		records := fetches.Records()
		if len(records) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return CaseResult{}, err
		}
		for _, r := range records {
			sess.Produce(ctx, &kgo.Record{Topic: topics.Events, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
		}
		committed, err := sess.End(ctx, kgo.TryCommit)
		if err != nil {
			return CaseResult{}, err
		}
		if committed {
			moved += len(records)
		}
	}
	return CaseResult{Case: name, Rows: cfg.Events, Seconds: time.Since(start).Seconds(),
		Note: "one record per command, its bytes as they came, one transaction per poll of up to 5000"}, nil
}
