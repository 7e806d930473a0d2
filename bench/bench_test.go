package bench

import (
	"strings"
	"testing"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The bench's events look like the processors' output: each cart's
// versions count 1, 2, 3 in order, and a cart stays on one partition.
func TestEventsAreLikeTheProcessors(t *testing.T) {
	cfg := Config{Events: 5000, Partitions: 4, Prefix: "b"}
	last := map[string]int64{}
	for _, env := range envelopesOnePartitionEach(t, events(cfg)) {
		if env.AggregateVersion != last[env.AggregateID]+1 {
			t.Fatalf("%s: version %d after %d", env.AggregateID, env.AggregateVersion, last[env.AggregateID])
		}
		last[env.AggregateID] = env.AggregateVersion
	}
}

func TestMarkdownStatesRatiosAgainstTargets(t *testing.T) {
	results := []Measured{
		{CaseResult: CaseResult{Case: "clickhouse-kappa", Rows: 100}, RowsPerSecond: 90},
		{CaseResult: CaseResult{Case: "clickhouse-bare", Rows: 100}, RowsPerSecond: 100},
		{CaseResult: CaseResult{Case: "postgres-kappa"}, Err: "boom"},
	}
	md := Markdown(Config{Events: 100, Partitions: 2}, results, "make bench")
	for _, want := range []string{"| ClickHouse projection / bare clickhouse-go insert | 0.90x | ≥ 0.8x |", "| Postgres projection / bare pgx staged upsert | n/a |", "error: boom"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// The bench's commands are what ingest writes: valid commands, each
// aggregate on one partition, so the processor accepts every one.
func TestCommandsAreValidAndKeyedByAggregate(t *testing.T) {
	cfg := Config{Events: 5000, Partitions: 4, Prefix: "b"}
	kinds := map[string]int{}
	for _, env := range envelopesOnePartitionEach(t, commands(cfg)) {
		if _, err := schemas.DecodeCommand(env); err != nil {
			t.Fatalf("command %s: %v", env.ID, err)
		}
		kinds[env.Type]++
	}
	if kinds[schemas.AddProductToCart] == 0 || kinds[schemas.PublishArticle] == 0 {
		t.Errorf("command kinds %v, want both adds and publishes", kinds)
	}
}

// envelopesOnePartitionEach decodes the records' envelopes, in order, and
// fails if an aggregate's records are on more than one partition.
func envelopesOnePartitionEach(t *testing.T, records []*kgo.Record) []schemas.Envelope {
	t.Helper()
	partition := map[string]int32{}
	envs := make([]schemas.Envelope, 0, len(records))
	for _, r := range records {
		env, err := kafka.Envelope(r)
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := partition[env.AggregateID]; ok && p != r.Partition {
			t.Fatalf("%s on partitions %d and %d", env.AggregateID, p, r.Partition)
		}
		partition[env.AggregateID] = r.Partition
		envs = append(envs, env)
	}
	return envs
}
