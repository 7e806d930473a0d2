package e2e_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/roles"
)

// A processor with a transaction interval starts its transactions at
// least that far apart, and still decides every command: commands sent one
// after another, each waiting for its outcome, all get accepted, and no
// more transactions commit than the elapsed time allows.
func TestProcessorTransactionsKeepTheirInterval(t *testing.T) {
	sys := newSystem(t, kappatest.Kafka(t), kappatest.Postgres(t), kappatest.ClickHouse(t), 3, 50*time.Millisecond)
	const interval = 200 * time.Millisecond
	sys.stop("process")
	sys.cfg.Processor.MinTransactionInterval = interval
	reg := prometheus.NewRegistry()
	sys.cfg.Registry = reg
	sys.start("process", roles.Process)

	m := newModel()
	const commands = 12
	start := time.Now()
	for i := range commands {
		body, err := json.Marshal(m.add("cart-interval", "p1", int64(i+1), 100))
		if err != nil {
			t.Fatal(err)
		}
		status, out := sys.do(t, http.MethodPost, "/v1/commands", "application/json", body, map[string]string{"Prefer": "wait=20"})
		var v commandView
		if err := json.Unmarshal(out, &v); err != nil || status != http.StatusOK || v.Status != "accepted" {
			t.Fatalf("command %d: status %d, %s; want 200 accepted", i, status, out)
		}
	}
	elapsed := time.Since(start)

	committed := counterValue(t, reg, "kappa_processor_transactions_committed_total")
	// Transaction starts are at least interval apart, so within elapsed
	// there is room for at most elapsed/interval + 1 of them.
	if most := float64(elapsed/interval) + 1; committed < 1 || committed > most {
		t.Errorf("%v transactions committed in %v; want between 1 and %v with an interval of %v", committed, elapsed, most, interval)
	}
}

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
	t.Fatalf("metric %s not registered", name)
	return 0
}
