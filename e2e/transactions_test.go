package e2e_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/roles"
)

// Transactions adapt to load. A lone command does not wait for the
// transaction interval: with an interval of 30 s, commands sent one after
// another, once a first one found the processor ready, are each decided
// within a 20 s Prefer: wait. A burst is decided
// in transactions far fewer than its commands, each up to the interval
// after the one before.
func TestProcessorTransactionsAdaptToLoad(t *testing.T) {
	sys := newSystem(t, kappatest.Kafka(t), kappatest.Postgres(t), kappatest.ClickHouse(t), 3, 50*time.Millisecond)
	sys.stop("process")
	sys.cfg.Processor.TransactionInterval = 30 * time.Second
	sys.cfg.Processor.TransactionTimeout = time.Minute
	reg := prometheus.NewRegistry()
	sys.cfg.Registry = reg
	sys.start("process", roles.Process)

	m := newModel()
	// The first command also waits for the processor to join its group
	// and restore its partitions, which on a busy machine can take
	// longer than a sequential client's wait: it is not one of them.
	warmUp, err := json.Marshal(m.add("cart-warm-up", "p1", 1, 100))
	if err != nil {
		t.Fatal(err)
	}
	if status, out := sys.do(t, http.MethodPost, "/v1/commands", "application/json", warmUp, map[string]string{"Prefer": "wait=60"}); status != http.StatusOK {
		t.Fatalf("the first command: status %d, %s", status, out)
	}
	const sequential = 5
	for i := range sequential {
		body, err := json.Marshal(m.add("cart-alone", "p1", int64(i+1), 100))
		if err != nil {
			t.Fatal(err)
		}
		status, out := sys.do(t, http.MethodPost, "/v1/commands", "application/json", body, map[string]string{"Prefer": "wait=20"}) // shorter than the interval
		var v commandView
		if err := json.Unmarshal(out, &v); err != nil || status != http.StatusOK || v.Status != "accepted" {
			t.Fatalf("command %d of a sequential client: status %d, %s; want 200 accepted, not the 202 of a command waiting for the interval", i, status, out)
		}
	}
	// The outcome can be read before the processor has counted its
	// commit: the broker writes the commit markers while the processor
	// reads the broker's answer.
	sys.eventually(t, func() bool {
		return counterValue(t, reg, "kappa_processor_transactions_committed_total") >= 1+sequential
	})
	if got := counterValue(t, reg, "kappa_processor_transactions_committed_total"); got != 1+sequential {
		t.Errorf("%v transactions for the first command and %d sequential ones, want one each", got, sequential)
	}

	// A burst: after a transaction of many commands the next waits, so
	// what arrives meanwhile is decided together.
	sys.stop("process")
	sys.cfg.Processor.TransactionInterval = 300 * time.Millisecond
	sys.cfg.Processor.TransactionTimeout = 0
	reg = prometheus.NewRegistry()
	sys.cfg.Registry = reg
	sys.start("process", roles.Process)
	var burst []command
	for i := range 2000 {
		burst = append(burst, m.add(fmt.Sprintf("cart-burst-%d", i%50), fmt.Sprintf("p%d", i), 1, 100))
	}
	for i := 0; i < len(burst); i += 100 {
		sys.postBatch(t, burst[i:i+100])
	}
	sys.eventually(t, func() bool {
		return counterValue(t, reg, "kappa_processor_commands_total") >= float64(len(burst))
	})
	if got := counterValue(t, reg, "kappa_processor_transactions_committed_total"); got > float64(len(burst))/200 {
		t.Errorf("%v transactions for a burst of %d commands; want them batched, at most one for 200", got, len(burst))
	}
}

// counterValue sums a counter family of reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	// A vector is gathered once it has a value; until then it counts 0.
	return 0
}
