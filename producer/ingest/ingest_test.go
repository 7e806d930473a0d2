package ingest_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestPublishReportsUnavailableWhenKafkaIsDown(t *testing.T) {
	pub, err := ingest.New(ingest.Config{Kafka: kafka.Connection{Brokers: []string{deadAddr(t)}}, Topics: kafka.TopicsFor("down"), ProduceTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	qty, price := int64(1), int64(5)
	cmd, err := ingest.NewCommand(schemas.AddProductToCart, "cart-1", "", "", schemas.AddProductV1{ProductID: "p1", Quantity: &qty, UnitPriceCents: &price})
	if err != nil {
		t.Fatal(err)
	}
	cmds := []ingest.Command{cmd}
	results, err := pub.Publish(t.Context(), cmds, 0)
	if !errors.Is(err, ingest.ErrUnavailable) {
		t.Fatalf("Publish error = %v, want ErrUnavailable", err)
	}
	if len(results) != 1 || results[0].Err == nil {
		t.Fatalf("results = %+v, want the command marked as not acknowledged", results)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	_, err := ingest.New(ingest.Config{ProduceTimeout: -time.Second})
	if err == nil {
		t.Fatal("New accepted an empty configuration")
	}
	for _, want := range []string{"Brokers is required", "Topics needs", "ProduceTimeout must be at least 1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %q", err, want)
		}
	}
}
