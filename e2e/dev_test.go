package e2e_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/roles"
)

// TestAllRolesShareOneOpsAddress: with every role in one process, as under
// kappa dev, one ops address serves every role's metrics and a /readyz
// that asks them all.
func TestAllRolesShareOneOpsAddress(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	prefix := kappatest.Name(t, "all")
	ops := "127.0.0.1:" + kappatest.FreePort(t)
	api := make(chan string, 1)
	cfg := roles.Config{Kafka: kafka.Connection{Brokers: broker.ListenAddrs()}, TopicPrefix: prefix, GroupPrefix: prefix,
		Postgres: kappatest.Postgres(t), ClickHouse: kappatest.ClickHouse(t), HTTPAddr: "127.0.0.1:0", OpsAddr: ops,
		Auth: roles.AuthConfig{Methods: []string{roles.AuthNone}}, OnListen: func(a net.Addr) { api <- a.String() },
		Processor: processor.Config{StateDir: t.TempDir()}}
	done := make(chan error, 1)
	go func() { done <- roles.All(t.Context(), cfg) }()
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + ops + path)
		if err != nil {
			return 0, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	kappatest.Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("the roles ended: %v", err)
		default:
		}
		if status, body, err := get("/readyz"); err != nil || status != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s %w", status, body, err)
		}
		return nil
	})
	// A request to the API, so that ingest's request counter has a value.
	resp, err := http.Get("http://" + <-api + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	_, metrics, err := get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range []string{"kappa_http_requests_total", "kappa_processor_transactions_committed_total", "kappa_projection_applied_records_total"} {
		if !strings.Contains(metrics, family) {
			t.Errorf("the shared /metrics lacks %s", family)
		}
	}
}
