package e2e_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/roles"
	"github.com/kappa-cqrs/kappa/schemas"
)

// TestPoisonParksItsAggregateUntilRedrive: a poison event parks its
// aggregate in both projections, later events of that aggregate wait behind
// it while other aggregates flow, and after the poison is discarded and the
// rest redriven, the aggregate's read models are complete and in order.
func TestPoisonParksItsAggregateUntilRedrive(t *testing.T) {
	sys, reads, ch, conn := startWithProjections(t)
	cfg := sys.cfg
	cartVersion := func(id string) int64 { return cartVersionIn(t, reads, id) }

	sys.addProduct(t, "dlq-a", "p1")
	sys.eventually(t, func() bool { return cartVersion("dlq-a") == 1 })

	// Poison for dlq-a: a schema version no build understands.
	poison := schemas.Envelope{ID: "poison-dlq-a", Type: schemas.CartProductAdded, Source: "test", Time: time.Now(), SchemaVersion: 99,
		AggregateID: "dlq-a", AggregateVersion: 2, Data: []byte(`{}`)}
	second := sys.addProduct(t, "dlq-a", "p1") // its position names dlq-a's partition
	pos, err := schemas.ParsePosition(second.Position)
	if err != nil {
		t.Fatal(err)
	}
	sys.eventually(t, func() bool { return cartVersion("dlq-a") == 2 })
	rec := kafka.Record(cfg.Topics().Events, pos.Partition, poison)
	manual, err := conn.NewClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	if err := manual.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	sys.addProduct(t, "dlq-a", "p2") // must wait behind the poison
	sys.addProduct(t, "dlq-b", "p1") // must flow
	sys.eventually(t, func() bool { return cartVersion("dlq-b") == 1 })

	for _, projection := range roles.Projections {
		sys.eventually(t, func() bool {
			book, err := deadletter.Load(t.Context(), conn, cfg.Topics().EventsDeadLetter, projection)
			return err == nil && len(book.Open()["dlq-a"]) >= 2
		})
	}
	if v := cartVersion("dlq-a"); v != 2 {
		t.Fatalf("dlq-a in Postgres at version %d while parked, want 2 (events after the poison must wait)", v)
	}

	// Discard the poison, redrive what waited behind it.
	var out bytes.Buffer
	for _, projection := range roles.Projections {
		book, err := deadletter.Load(t.Context(), conn, cfg.Topics().EventsDeadLetter, projection)
		if err != nil {
			t.Fatal(err)
		}
		first := book.Open()["dlq-a"][0]
		if first.Behind != nil {
			t.Fatalf("%s: the first parked record of dlq-a is not the poison: %+v", projection, first)
		}
		f := deadletter.Filter{Position: &first.Position}
		if err := roles.DLQDiscard(t.Context(), cfg, projection, f, true, &out); err != nil {
			t.Fatal(err)
		}
		if err := roles.DLQDiscard(t.Context(), cfg, projection, f, false, &out); err != nil {
			t.Fatal(err)
		}
		if err := roles.DLQRedrive(t.Context(), cfg, projection, deadletter.Filter{AggregateID: "dlq-a"}, false, &out); err != nil {
			t.Fatal(err)
		}
		if err := roles.DLQList(t.Context(), cfg, projection, &out); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("dlq commands said:\n%s", out.String())
	if !strings.Contains(out.String(), "projection postgres: 0 open") || !strings.Contains(out.String(), "projection clickhouse: 0 open") {
		t.Fatalf("dead letters still open after discard and redrive:\n%s", out.String())
	}

	// The aggregate flows again, after what was redriven.
	sys.addProduct(t, "dlq-a", "p3")
	sys.eventually(t, func() bool { return cartVersion("dlq-a") == 4 })
	cart, err := reads.Cart(t.Context(), "dlq-a")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, it := range cart.Items {
		got[it.ProductID] = it.Quantity
	}
	if fmt.Sprint(got) != fmt.Sprint(map[string]int64{"p1": 2, "p2": 1, "p3": 1}) {
		t.Fatalf("dlq-a after redrive: %+v", cart)
	}
	chStore := openClickHouse(t, ch)
	sys.eventually(t, func() bool {
		var n, distinct uint64
		err := chStore.Conn().QueryRow(t.Context(), "SELECT count(), uniqExact(event_id) FROM "+ch.Database+".events WHERE aggregate_id = 'dlq-a'").Scan(&n, &distinct)
		return err == nil && n == 4 && distinct == 4
	})
}

// TestConstraintViolationIsParked: an event Postgres refuses for its
// contents (a CHECK constraint) is retried a bounded number of times, then
// parked in that projection only, with the aggregate's later events behind
// it; ClickHouse, which accepts it, applies everything.
func TestConstraintViolationIsParked(t *testing.T) {
	sys, reads, ch, conn := startWithProjections(t)

	// A NUL in a product id decodes, and ClickHouse stores it, but Postgres
	// text refuses it (SQLSTATE 22021).
	bad := schemas.Envelope{ID: "bad-product", Type: schemas.CartProductAdded, Source: "test", Time: time.Now(), SchemaVersion: 1,
		AggregateID: "cv-x", AggregateVersion: 1, Data: []byte(`{"product_id":"p\u0000","quantity":1,"unit_price_cents":10}`)}
	manual, err := conn.NewClient(kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	if err := manual.ProduceSync(t.Context(), kafka.Record(sys.cfg.Topics().Events, 0, bad)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	sys.addProduct(t, "cv-x", "p1") // waits behind the refused event in Postgres
	sys.addProduct(t, "cv-y", "p1") // flows
	sys.eventually(t, func() bool { c, err := reads.Cart(t.Context(), "cv-y"); return err == nil && c.Version == 1 })

	var pgBook, chBook *deadletter.Book
	sys.eventually(t, func() bool {
		pgBook, err = deadletter.Load(t.Context(), conn, sys.cfg.Topics().EventsDeadLetter, "postgres")
		return err == nil && len(pgBook.Open()["cv-x"]) == 2
	})
	first := pgBook.Open()["cv-x"][0]
	if !strings.Contains(first.Reason, "22021") || first.Record.Headers == nil {
		t.Errorf("the parked record's reason does not name the refusal: %q", first.Reason)
	}
	if _, err := reads.Cart(t.Context(), "cv-x"); !errors.Is(err, postgres.ErrNotFound) {
		t.Errorf("cv-x reached Postgres although its first event was refused: %v", err)
	}
	chStore := openClickHouse(t, ch)
	sys.eventually(t, func() bool {
		var n uint64
		err := chStore.Conn().QueryRow(t.Context(), "SELECT count() FROM "+ch.Database+".events WHERE aggregate_id = 'cv-x'").Scan(&n)
		return err == nil && n == 2
	})
	chBook, err = deadletter.Load(t.Context(), conn, sys.cfg.Topics().EventsDeadLetter, "clickhouse")
	if err != nil {
		t.Fatal(err)
	}
	if open, _, _, _ := chBook.Counts(); open != 0 {
		t.Errorf("ClickHouse parked %d records; it accepts them all", open)
	}
}

// addProduct adds one unit of a product to a cart and waits for the
// decision, which must be an acceptance.
func (s *system) addProduct(t *testing.T, cart, product string) commandView {
	t.Helper()
	body, _ := json.Marshal(command{Type: "cart.add_product", AggregateID: cart, Data: map[string]any{"product_id": product, "quantity": 1, "unit_price_cents": 10}})
	status, out := s.do(t, http.MethodPost, "/v1/commands", "application/json", body, map[string]string{"Prefer": "wait=20"})
	var v commandView
	if status != http.StatusOK || json.Unmarshal(out, &v) != nil {
		t.Fatalf("add %s to %s: %d %s", product, cart, status, out)
	}
	return v
}

// TestRecordsParkedBehindAResolvedEntryFlow: when only the poison is
// resolved (as when a redrive or discard took its snapshot while the
// projection still parked the aggregate's next records), the records that
// waited behind it need no second command: each projection applies them
// itself, in order, and the aggregate flows again.
func TestRecordsParkedBehindAResolvedEntryFlow(t *testing.T) {
	sys, reads, ch, conn := startWithProjections(t)
	cfg := sys.cfg
	cartVersion := func() int64 { return cartVersionIn(t, reads, "dlq-o") }

	first := sys.addProduct(t, "dlq-o", "p1")
	sys.eventually(t, func() bool { return cartVersion() == 1 })
	pos, err := schemas.ParsePosition(first.Position)
	if err != nil {
		t.Fatal(err)
	}
	poison := schemas.Envelope{ID: "poison-dlq-o", Type: schemas.CartProductAdded, Source: "test", Time: time.Now(), SchemaVersion: 99,
		AggregateID: "dlq-o", AggregateVersion: 2, Data: []byte(`{}`)}
	manual, err := conn.NewClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	if err := manual.ProduceSync(t.Context(), kafka.Record(cfg.Topics().Events, pos.Partition, poison)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	sys.addProduct(t, "dlq-o", "p2") // parked behind the poison
	for _, projection := range roles.Projections {
		sys.eventually(t, func() bool {
			book, err := deadletter.Load(t.Context(), conn, cfg.Topics().EventsDeadLetter, projection)
			return err == nil && len(book.Open()["dlq-o"]) == 2
		})
	}

	// Discard the poison alone, by its position; redrive nothing.
	var out bytes.Buffer
	for _, projection := range roles.Projections {
		book, err := deadletter.Load(t.Context(), conn, cfg.Topics().EventsDeadLetter, projection)
		if err != nil {
			t.Fatal(err)
		}
		root := book.Open()["dlq-o"][0]
		if err := roles.DLQDiscard(t.Context(), cfg, projection, deadletter.Filter{Position: &root.Position}, false, &out); err != nil {
			t.Fatal(err)
		}
	}
	sys.eventually(t, func() bool { return cartVersion() == 2 })
	for _, projection := range roles.Projections {
		sys.eventually(t, func() bool {
			book, err := deadletter.Load(t.Context(), conn, cfg.Topics().EventsDeadLetter, projection)
			if err != nil {
				return false
			}
			open, parked, redriven, discarded := book.Counts()
			return open == 0 && parked == 2 && redriven == 1 && discarded == 1
		})
	}

	// The aggregate flows again, after what waited.
	sys.addProduct(t, "dlq-o", "p3")
	sys.eventually(t, func() bool { return cartVersion() == 3 })
	cart, err := reads.Cart(t.Context(), "dlq-o")
	if err != nil {
		t.Fatal(err)
	}
	if len(cart.Items) != 3 {
		t.Errorf("dlq-o: %+v, want p1, p2 and p3", cart)
	}
	chStore := openClickHouse(t, ch)
	sys.eventually(t, func() bool {
		var n, distinct uint64
		err := chStore.Conn().QueryRow(t.Context(), "SELECT count(), uniqExact(event_id) FROM "+ch.Database+".events WHERE aggregate_id = 'dlq-o'").Scan(&n, &distinct)
		return err == nil && n == 3 && distinct == 3
	})
}

// startWithProjections starts a deployment with both projections on two
// partitions and opens its Postgres read model.
func startWithProjections(t *testing.T) (*system, *postgres.Store, clickhouse.Config, kafka.Connection) {
	t.Helper()
	conn := kappatest.Kafka(t)
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	sys := newSystem(t, conn, pg, ch, 2, 20*time.Millisecond)
	sys.start("postgres", roles.ProjectPostgres)
	sys.start("clickhouse", roles.ProjectClickHouse)
	reads, err := postgres.Open(t.Context(), pg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reads.Close)
	return sys, reads, ch, conn
}

// cartVersionIn is a cart's version in Postgres, or -1 while it has none.
func cartVersionIn(t *testing.T, reads *postgres.Store, id string) int64 {
	c, err := reads.Cart(t.Context(), id)
	if err != nil {
		return -1
	}
	return c.Version
}
