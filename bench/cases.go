package bench

// This file holds the projection and ingest cases side by side, so that a
// case and its baseline read together; it is longer than the usual 400
// lines for that. The processor's two cases are in processor.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projector"
	"github.com/kappa-cqrs/kappa/roles"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Cases lists the cases in the order the orchestrator runs them.
var Cases = []string{"clickhouse-kappa", "clickhouse-bare", "clickhouse-kafka-engine", "clickhouse-kappa-embedded", "postgres-kappa", "postgres-bare", "ingest-kappa", "ingest-bare",
	"processor-kappa", "processor-bare"}

// RunCase runs one case in this process and reports it with its peak RSS.
func RunCase(ctx context.Context, cfg Config, name string) (CaseResult, error) {
	if cfg.ProfileDir != "" {
		stop, err := startProfiles(cfg.ProfileDir, name)
		if err != nil {
			return CaseResult{}, err
		}
		defer stop()
	}
	res, err := runCase(ctx, cfg, name)
	res.PeakRSSMiB = peakRSS()
	return res, err
}

// startProfiles profiles the CPU of a case and, when stopped, writes the
// heap profile next to it.
func startProfiles(dir, name string) (stop func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	cpu, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		_ = cpu.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = cpu.Close()
		if heap, err := os.Create(filepath.Join(dir, name+".heap.pprof")); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(heap, 0)
			_ = heap.Close()
		}
	}, nil
}

func runCase(ctx context.Context, cfg Config, name string) (CaseResult, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	switch name {
	case "clickhouse-kappa":
		return projectClickHouse(ctx, cfg, name, quiet)
	case "clickhouse-kappa-embedded":
		// The engine's topic: the same records on the embedded broker.
		broker, embedded, err := embeddedCopy(ctx, cfg)
		if err != nil {
			return CaseResult{}, err
		}
		defer broker.Close()
		res, err := projectClickHouse(ctx, embedded, name, quiet)
		res.Note = "reads the engine's copy of the topic on the embedded broker in the case's process, so process CPU includes that broker's"
		return res, err
	case "postgres-kappa":
		store, err := postgres.Open(ctx, postgres.Config{URL: cfg.PostgresURL, Schema: cfg.PostgresSchema + "_kappa", Logger: quiet})
		if err != nil {
			return CaseResult{}, err
		}
		defer store.Close()
		if err := store.Migrate(ctx); err != nil {
			return CaseResult{}, err
		}
		return project(ctx, cfg, name, store, quiet)
	case "clickhouse-bare":
		return clickhouseBare(ctx, cfg)
	case "clickhouse-kafka-engine":
		return clickhouseEngine(ctx, cfg)
	case "postgres-bare":
		return postgresBare(ctx, cfg)
	case "ingest-kappa":
		return ingestKappa(ctx, cfg, quiet)
	case "ingest-bare":
		return ingestBare(ctx, cfg)
	case "processor-kappa":
		return processorKappa(ctx, cfg, name, quiet)
	case "processor-bare":
		return processorBare(ctx, cfg, name)
	}
	return CaseResult{}, fmt.Errorf("unknown case %q; one of %v", name, Cases)
}

// projectClickHouse runs Kappa's ClickHouse projection into a new database.
func projectClickHouse(ctx context.Context, cfg Config, name string, log *slog.Logger) (CaseResult, error) {
	store, err := clickhouse.Open(ctx, clickhouse.Config{Addr: cfg.ClickHouseAddr, Database: cfg.ClickHouseDatabase + "_kappa", Logger: log})
	if err != nil {
		return CaseResult{}, err
	}
	defer func() { _ = store.Close() }()
	if err := store.Migrate(ctx); err != nil {
		return CaseResult{}, err
	}
	return project(ctx, cfg, name, store, log)
}

// project runs Kappa's projection runtime over the bench topic until every
// event is applied.
func project(ctx context.Context, cfg Config, name string, sink projector.Sink, log *slog.Logger) (CaseResult, error) {
	c, err := projector.New(projector.Config{Kafka: cfg.kafka(), Group: cfg.Prefix + "-" + name, Topic: eventsTopic(cfg),
		DeadLetterTopic: cfg.Prefix + ".events.dlq", Projection: name, Logger: log}, sink)
	if err != nil {
		return CaseResult{}, err
	}
	elapsed, err := runUntil(ctx, c.Run, func() bool { return c.AppliedRecords() >= int64(cfg.Events) })
	if err != nil {
		return CaseResult{}, fmt.Errorf("projection stopped: %w", err)
	}
	return CaseResult{Case: name, Rows: cfg.Events, Seconds: elapsed.Seconds()}, nil
}

// runUntil runs a role until done says it has done the case's work, then
// stops it, and returns how long the work took.
func runUntil(ctx context.Context, run func(context.Context) error, done func() bool) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx) }()
	for !done() {
		select {
		case err := <-stopped:
			return 0, err
		case <-time.After(5 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	cancel()
	return elapsed, <-stopped
}

// consumeAll reads the bench topic from the start, in batches, until every
// event has been handed to fn.
func consumeAll(ctx context.Context, cfg Config, fn func([]*kgo.Record) error) error {
	cl, err := cfg.kafka().NewClient(kgo.ConsumeTopics(eventsTopic(cfg)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := 0
	for seen < cfg.Events {
		fetches := cl.PollRecords(ctx, 10000)
		if err := ctx.Err(); err != nil {
			return err
		}
		records := fetches.Records()
		if len(records) == 0 {
			continue
		}
		if err := fn(records); err != nil {
			return err
		}
		seen += len(records)
	}
	return nil
}

// clickhouseBare is the ceiling: the same rows into the same two tables
// (events and cart_lines), one batch insert each per poll, no runtime.
func clickhouseBare(ctx context.Context, cfg Config) (CaseResult, error) {
	db := cfg.ClickHouseDatabase + "_bare"
	store, err := clickhouse.Open(ctx, clickhouse.Config{Addr: cfg.ClickHouseAddr, Database: db})
	if err != nil {
		return CaseResult{}, err
	}
	defer func() { _ = store.Close() }()
	if err := store.Migrate(ctx); err != nil {
		return CaseResult{}, err
	}
	conn := store.Conn()
	start := time.Now()
	err = consumeAll(ctx, cfg, func(records []*kgo.Record) error {
		lines, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".cart_lines (event_id, event_type, cart_id, product_id, quantity_delta, unit_price_cents, cart_version, occurred_at, `partition`, `offset`)")
		if err != nil {
			return err
		}
		events, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, event_type, schema_version, aggregate_id, aggregate_version, command_id, tenant, source, occurred_at, payload, topic, `partition`, `offset`)")
		if err != nil {
			return err
		}
		for _, r := range records {
			rec, err := kafka.Decode(r)
			if err != nil {
				return err
			}
			e, p := rec.Envelope, rec.Payload.(schemas.CartProductAddedV1)
			if err := lines.Append(e.ID, e.Type, e.AggregateID, p.ProductID, p.Quantity, p.UnitPriceCents, uint64(e.AggregateVersion), e.Time, r.Partition, r.Offset); err != nil {
				return err
			}
			if err := events.Append(e.ID, e.Type, uint16(e.SchemaVersion), e.AggregateID, uint64(e.AggregateVersion), e.CommandID, e.Tenant, e.Source, e.Time, string(e.Data), r.Topic, r.Partition, r.Offset); err != nil {
				return err
			}
		}
		if err := lines.Send(); err != nil {
			return err
		}
		return events.Send()
	})
	return CaseResult{Case: "clickhouse-bare", Rows: cfg.Events, Seconds: time.Since(start).Seconds()}, err
}

// clickhouseEngine lets ClickHouse's Kafka table engine consume the events
// into a MergeTree table through a materialized view, and waits for every
// row. The engine reads the JSON payloads; it sees no headers. The librdkafka
// inside Debian's ClickHouse 18.16 speaks protocol versions Kafka 4 no
// longer serves, so this case feeds the engine from the embedded broker
// (kfake, in this process) holding the same records.
func clickhouseEngine(ctx context.Context, cfg Config) (CaseResult, error) {
	broker, embedded, err := embeddedCopy(ctx, cfg)
	if err != nil {
		return CaseResult{}, err
	}
	defer broker.Close()
	cfg = embedded
	// Commit the engine's group at the start, so that the clock measures
	// the engine's consumption only: its librdkafka would otherwise start
	// at the end of the topic.
	if err := commitStart(ctx, cfg, cfg.Prefix+"-engine"); err != nil {
		return CaseResult{}, err
	}
	db := cfg.ClickHouseDatabase + "_engine"
	store, err := clickhouse.Open(ctx, clickhouse.Config{Addr: cfg.ClickHouseAddr, Database: db})
	if err != nil {
		return CaseResult{}, err
	}
	defer func() { _ = store.Close() }()
	conn := store.Conn()
	start := time.Now()
	for _, stmt := range []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		"CREATE TABLE " + db + ".cart_lines (product_id String, quantity Int64, unit_price_cents Int64) ENGINE = MergeTree() ORDER BY product_id",
		fmt.Sprintf("CREATE TABLE %s.queue (product_id String, quantity Int64, unit_price_cents Int64) ENGINE = Kafka('%s', '%s', '%s', 'JSONEachRow')",
			db, strings.Join(cfg.Brokers, ","), eventsTopic(cfg), cfg.Prefix+"-engine"),
		"CREATE MATERIALIZED VIEW " + db + ".consume TO " + db + ".cart_lines AS SELECT product_id, quantity, unit_price_cents FROM " + db + ".queue",
	} {
		if err := conn.Exec(ctx, stmt); err != nil {
			return CaseResult{}, fmt.Errorf("%s: %w", stmt, err)
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".cart_lines").Scan(&n); err != nil {
			return CaseResult{}, err
		}
		if int(n) >= cfg.Events {
			break
		}
		if time.Now().After(deadline) {
			return CaseResult{}, fmt.Errorf("the Kafka engine consumed %d of %d rows in 10 minutes", n, cfg.Events)
		}
		time.Sleep(20 * time.Millisecond) // polling the engine's progress
	}
	elapsed := time.Since(start)
	_ = conn.Exec(ctx, "DROP TABLE "+db+".consume")
	_ = conn.Exec(ctx, "DROP TABLE "+db+".queue")
	return CaseResult{Case: "clickhouse-kafka-engine", Rows: cfg.Events, Seconds: elapsed.Seconds(),
		Note: "cart_lines only, from payloads; reads the same records from the embedded broker in the case's process (18.16's librdkafka predates Kafka 4's protocol floor), so process CPU is that broker's"}, nil
}

// embeddedCopy starts an in-process broker holding the bench's events and
// returns the configuration that points at it.
func embeddedCopy(ctx context.Context, cfg Config) (*kfake.Cluster, Config, error) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(cfg.Partitions, eventsTopic(cfg), cfg.Prefix+".events.dlq"))
	if err != nil {
		return nil, cfg, err
	}
	embedded := cfg
	embedded.Brokers = broker.ListenAddrs()
	if err := produceEvents(ctx, embedded); err != nil {
		broker.Close()
		return nil, cfg, err
	}
	return broker, embedded, nil
}

// commitStart commits offset 0 of every partition of the bench topic for
// a group that has not consumed yet.
func commitStart(ctx context.Context, cfg Config, group string) error {
	cl, err := cfg.kafka().NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	offsets := kadm.Offsets{}
	for p := range cfg.Partitions {
		offsets.Add(kadm.Offset{Topic: eventsTopic(cfg), Partition: p, At: 0, LeaderEpoch: -1})
	}
	resp, err := kadm.NewClient(cl).CommitOffsets(ctx, group, offsets)
	if err != nil {
		return fmt.Errorf("commit the engine's start: %w", err)
	}
	return resp.Error()
}

// postgresBare is the ceiling the brief names: COPY into a temporary
// table, then INSERT ... ON CONFLICT with a version guard, per poll.
func postgresBare(ctx context.Context, cfg Config) (CaseResult, error) {
	conn, err := pgx.Connect(ctx, cfg.PostgresURL)
	if err != nil {
		return CaseResult{}, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	schema := pgx.Identifier{cfg.PostgresSchema + "_bare"}.Sanitize()
	for _, stmt := range []string{
		"CREATE SCHEMA IF NOT EXISTS " + schema,
		"SET search_path = " + schema,
		"CREATE TABLE carts (id text PRIMARY KEY, version bigint NOT NULL)",
		"CREATE TABLE cart_items (cart_id text, product_id text, quantity bigint NOT NULL, unit_price_cents bigint NOT NULL, version bigint NOT NULL, PRIMARY KEY (cart_id, product_id))",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return CaseResult{}, fmt.Errorf("%s: %w", stmt, err)
		}
	}
	start := time.Now()
	err = consumeAll(ctx, cfg, func(records []*kgo.Record) error {
		rows := make([][]any, 0, len(records))
		for _, r := range records {
			rec, err := kafka.Decode(r)
			if err != nil {
				return err
			}
			p := rec.Payload.(schemas.CartProductAddedV1)
			rows = append(rows, []any{rec.Envelope.AggregateID, p.ProductID, p.Quantity, p.UnitPriceCents, rec.Envelope.AggregateVersion})
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE staging (cart_id text, product_id text, quantity bigint, unit_price_cents bigint, version bigint) ON COMMIT DROP"); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"staging"}, []string{"cart_id", "product_id", "quantity", "unit_price_cents", "version"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		for _, stmt := range []string{
			`INSERT INTO cart_items AS t SELECT cart_id, product_id, sum(quantity), max(unit_price_cents), max(version) FROM staging GROUP BY 1, 2
				ON CONFLICT (cart_id, product_id) DO UPDATE SET quantity = t.quantity + EXCLUDED.quantity, unit_price_cents = EXCLUDED.unit_price_cents,
				version = EXCLUDED.version WHERE t.version < EXCLUDED.version`,
			`INSERT INTO carts AS t SELECT cart_id, max(version) FROM staging GROUP BY 1
				ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version WHERE t.version < EXCLUDED.version`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return tx.Commit(ctx)
	})
	return CaseResult{Case: "postgres-bare", Rows: cfg.Events, Seconds: time.Since(start).Seconds()}, err
}

// commandBodies are the commands ingest cases send: adds to 10000 carts.
func commandBodies(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"type":"cart.add_product","aggregate_id":"cart-%d","data":{"product_id":"p%d","quantity":1,"unit_price_cents":%d}}`,
			i%10000, i%50, 100+25*(i%50))
	}
	return out
}

// ingestKappa posts the commands in batches of 1000 through HTTP to an
// ingest running in this process, from 8 connections. The API is open: one
// authentication per request of 1000 commands, served from the key cache,
// would not show in the numbers.
func ingestKappa(ctx context.Context, cfg Config, log *slog.Logger) (CaseResult, error) {
	listening := make(chan net.Addr, 1)
	rcfg := roles.Config{Kafka: cfg.kafka(), TopicPrefix: cfg.Prefix, CreateTopics: kafka.TopicConfig{Partitions: cfg.Partitions}, HTTPAddr: "127.0.0.1:0",
		Auth: roles.AuthConfig{Methods: []string{roles.AuthNone}},
		// The bench measures how fast ingest can go, not a credential's
		// limit (10,000 commands a second by default).
		API:      api.Config{CommandRate: -1},
		Postgres: postgres.Config{URL: cfg.PostgresURL, Schema: cfg.PostgresSchema + "_ingest"}, Logger: log,
		OnListen: func(a net.Addr) { listening <- a }}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- roles.Ingest(ctx, rcfg) }()
	var base string
	select {
	case a := <-listening:
		base = "http://" + a.String()
	case err := <-done:
		return CaseResult{}, err
	}
	bodies := commandBodies(cfg.Events)
	const batch = 1000
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(batch)) - batch
				if i >= len(bodies) {
					return
				}
				body := append(append([]byte("["), bytes.Join(bodies[i:min(i+batch, len(bodies))], []byte(","))...), ']')
				resp, err := http.Post(base+"/v1/commands:batch", "application/json", bytes.NewReader(body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := firstErr.Load().(error); ok {
		return CaseResult{}, err
	}
	return CaseResult{Case: "ingest-kappa", Rows: cfg.Events, Seconds: elapsed.Seconds(), Note: "HTTP batches of 1000, validated, acks=all"}, nil
}

// ingestBare produces the same command records with a bare idempotent
// acks=all franz-go producer.
func ingestBare(ctx context.Context, cfg Config) (CaseResult, error) {
	cl, err := cfg.kafka().NewClient(append(kafka.DurableProducer(), kgo.DefaultProduceTopic(cfg.Prefix+".commands"))...)
	if err != nil {
		return CaseResult{}, err
	}
	defer cl.Close()
	bodies := commandBodies(cfg.Events)
	start := time.Now()
	var failed atomic.Value
	for i, body := range bodies {
		env := schemas.Envelope{ID: ingest.NewCommandID(), Type: schemas.AddProductToCart, Source: "bench", Time: time.Now(), SchemaVersion: 1,
			AggregateID: fmt.Sprintf("cart-%d", i%10000), Data: body}
		cl.Produce(ctx, kafka.Record("", 0, env), func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return CaseResult{}, err
	}
	if err, ok := failed.Load().(error); ok {
		return CaseResult{}, errors.Join(errors.New("produce"), err)
	}
	return CaseResult{Case: "ingest-bare", Rows: cfg.Events, Seconds: time.Since(start).Seconds(), Note: "idempotent, acks=all"}, nil
}
