package roles

import (
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/projector"
)

func TestValidateJoinsEveryProblemOfEveryComponent(t *testing.T) {
	valid := Config{Kafka: kafka.Connection{Brokers: []string{"127.0.0.1:9092"}}}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"no brokers", func(c *Config) { c.Kafka.Brokers = nil }, []string{"Brokers is required"}},
		{"ingest remembers keys longer than the processors", func(c *Config) {
			c.Intake = ingest.IntakeConfig{IdempotencyWindow: 48 * time.Hour}
		}, []string{"IdempotencyWindow 48h0m0s must not exceed the processors' 24h0m0s"}},
		{"a projection blocks rebalances past the rebalance timeout", func(c *Config) {
			c.PostgresProjector = projector.Config{MaxBlock: 2 * time.Minute}
		}, []string{"the postgres projection", "MaxBlock 2m0s must stay below"}},
		{"every problem at once", func(c *Config) {
			c.Processor = processor.Config{TransactionInterval: 20 * time.Second, MaxBatchRecords: -1, FetchMaxBytes: -1}
			c.ClickHouseProjector = projector.Config{MaxBatchRecords: -5}
			c.API.MaxWait = -time.Second
		}, []string{"TransactionInterval 20s must be shorter than TransactionTimeout 10s", "processor: MaxBatchRecords", "processor: FetchMaxBytes",
			"the clickhouse projection: projector: MaxBatchRecords", "api: waits must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.change(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v\nwant it to say %q", err, w)
				}
			}
		})
	}
}
