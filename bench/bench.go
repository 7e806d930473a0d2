// Package bench measures Kappa's projections and ingest against their
// baselines on the same machine and the same data: ClickHouse's own Kafka
// table engine and a bare clickhouse-go batch insert for the ClickHouse
// projection, a bare pgx staged upsert for the Postgres projection, and a
// bare franz-go producer for ingest. Each case runs in its own process so
// that its CPU time and peak memory are its own; the servers' CPU time is
// read from /proc around each case.
package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// kafka is how every case reaches Kafka.
func (c Config) kafka() kafka.Connection { return kafka.Connection{Brokers: c.Brokers} }

// Config is shared by the orchestrator and the cases.
type Config struct {
	Brokers            []string `json:"brokers"`
	Events             int      `json:"events"`
	Partitions         int32    `json:"partitions"`
	Prefix             string   `json:"prefix"`
	PostgresURL        string   `json:"postgres_url"`
	ClickHouseAddr     []string `json:"clickhouse_addr"`
	ClickHouseDatabase string   `json:"clickhouse_database"`
	PostgresSchema     string   `json:"postgres_schema"`
	// Only runs these cases; all of Cases when empty.
	Only []string `json:"only,omitempty"`
	// ProfileDir, when set, receives a CPU and a heap profile per case.
	ProfileDir string `json:"profile_dir,omitempty"`
}

func (c Config) cases() []string {
	if len(c.Only) == 0 {
		return Cases
	}
	return c.Only
}

// CaseResult is what a case process reports on stdout.
type CaseResult struct {
	Case    string  `json:"case"`
	Rows    int     `json:"rows"`
	Seconds float64 `json:"seconds"`
	Note    string  `json:"note,omitempty"`
	// PeakRSSMiB is the case process's VmHWM. The kernel's rusage is no
	// use here: a child started by vfork inherits its parent's high-water
	// mark.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// peakRSS reads this process's VmHWM in MiB.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// events makes the bench's data: cart.product_added events over 10000
// carts, with the versions and keys the processors would give them.
func events(cfg Config) []*kgo.Record {
	rng := rand.New(rand.NewPCG(7, 11))
	versions := map[string]int64{}
	records := make([]*kgo.Record, cfg.Events)
	now := time.Now().UTC()
	for i := range records {
		cart := fmt.Sprintf("cart-%d", rng.IntN(10000))
		product := rng.IntN(50)
		versions[cart]++
		data, _ := json.Marshal(schemas.CartProductAddedV1{ProductID: fmt.Sprintf("p%d", product), Quantity: int64(1 + rng.IntN(3)), UnitPriceCents: int64(100 + 25*product)})
		env := schemas.Envelope{ID: fmt.Sprintf("%s-e%d", cfg.Prefix, i), Type: schemas.CartProductAdded, Source: "bench", Time: now,
			SchemaVersion: 1, AggregateID: cart, AggregateVersion: versions[cart], CommandID: fmt.Sprintf("c%d", i), Data: data}
		h := fnv.New32a()
		_, _ = h.Write([]byte(cart))
		records[i] = kafka.Record(eventsTopic(cfg), int32(h.Sum32()%uint32(cfg.Partitions)), env)
	}
	return records
}

func eventsTopic(cfg Config) string { return cfg.Prefix + ".events" }

// produceEvents writes the bench's events to their topic.
func produceEvents(ctx context.Context, cfg Config) error {
	return produceAll(ctx, cfg, events(cfg))
}

// produceAll writes records, which name their topics and partitions.
func produceAll(ctx context.Context, cfg Config, records []*kgo.Record) error {
	cl, err := cfg.kafka().NewClient(kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerLinger(5*time.Millisecond), kafka.Compression())
	if err != nil {
		return err
	}
	defer cl.Close()
	for i := 0; i < len(records); i += 10000 {
		if err := cl.ProduceSync(ctx, records[i:min(i+10000, len(records))]...).FirstErr(); err != nil {
			return fmt.Errorf("produce to %s: %w", records[i].Topic, err)
		}
	}
	return nil
}
