package clickhouse_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projectiontest"
)

// TestFencedWriterWritesNothing: a member that lost its partitions (not in
// the group any more) comes back with the batch it held; the member that
// took over fenced it off, so its write fails with ErrFenced and lands
// nowhere, and the new owner's copy is the only one.
func TestFencedWriterWritesNothing(t *testing.T) {
	cfg := kappatest.ClickHouse(t)
	st := projectiontest.Stream()
	stale, owner := open(t, cfg), open(t, cfg)
	if err := stale.Fence(t.Context(), "member-a", []string{"member-a"}); err != nil {
		t.Fatal(err)
	}
	half := len(st.Records) / 2
	if err := stale.Apply(t.Context(), st.Records[:half]); err != nil {
		t.Fatal(err)
	}

	// member-a is expelled; member-b takes every partition.
	if err := owner.Fence(t.Context(), "member-b", []string{"member-b"}); err != nil {
		t.Fatal(err)
	}
	next, err := owner.Resume(t.Context(), st.Topic, []int32{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Apply(t.Context(), kappatest.From(st.Records, next)); err != nil {
		t.Fatal(err)
	}

	err = stale.Apply(t.Context(), st.Records[half:])
	if !errors.Is(err, clickhouse.ErrFenced) || !stale.Fenced(err) {
		t.Fatalf("the stale writer's Apply returned %v, want ErrFenced", err)
	}
	if d := projectiontest.Diff(contents(t, owner), want); d != "" {
		t.Fatalf("contents:%s", d)
	}
	if gates := gateTables(t, owner); len(gates) != 5 || !strings.Contains(gates[0], clickhouse.WriterID("member-b")) {
		t.Fatalf("gates %v, want the five of member-b only", gates)
	}
}

// TestFencingWaitsForAWriteInFlight: the new owner fences while the former
// member's insert is still being sent (it stopped in the middle). The
// fence must wait for that insert, so that the positions read after it
// include the rows; the former member's next insert fails.
func TestFencingWaitsForAWriteInFlight(t *testing.T) {
	cfg := kappatest.ClickHouse(t)
	st := projectiontest.Stream()
	stale, owner := open(t, cfg), open(t, cfg)
	if err := stale.Fence(t.Context(), "member-a", []string{"member-a"}); err != nil {
		t.Fatal(err)
	}
	// The insert the stale member is in the middle of: prepared (the
	// server holds the gate) but its rows not sent yet.
	gate := clickhouse.GateName(clickhouse.WriterID("member-a"), "events")
	batch, err := stale.Conn().PrepareBatch(t.Context(), fmt.Sprintf(
		"INSERT INTO %s.%s (event_id, event_type, schema_version, aggregate_id, aggregate_version, command_id, tenant, source, occurred_at, payload, topic, `partition`, `offset`)",
		cfg.Database, gate))
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append("in-flight", "cart.product_added", uint16(1), "c9", uint64(1), "cmd", "", "test", time.Now().UTC(), "{}", st.Topic, int32(2), int64(41)); err != nil {
		t.Fatal(err)
	}

	fenced := make(chan error, 1)
	go func() { fenced <- owner.Fence(t.Context(), "member-b", []string{"member-b"}) }()
	kappatest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		var n uint64
		if err := owner.Conn().QueryRow(t.Context(), "SELECT count() FROM system.processes WHERE query LIKE 'DROP TABLE%"+gate+"%'").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("the fence has not reached the gate yet")
		}
		return nil
	})
	select {
	case err := <-fenced:
		t.Fatalf("the fence returned (%v) while an insert into the gate was in flight", err)
	default:
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("the insert in flight: %v", err)
	}
	if err := <-fenced; err != nil {
		t.Fatal(err)
	}
	next, err := owner.Resume(t.Context(), st.Topic, []int32{2})
	if err != nil {
		t.Fatal(err)
	}
	if next[2] != 42 {
		t.Fatalf("resume at %d on partition 2, want 42: the fence did not wait for the insert in flight", next[2])
	}
	if err := stale.Apply(t.Context(), st.Records); !errors.Is(err, clickhouse.ErrFenced) {
		t.Fatalf("the stale writer's next Apply returned %v, want ErrFenced", err)
	}
}

// TestFenceKeepsLiveWriters: members of the group keep their gates; a
// member fencing again (a second assignment) changes nothing for them.
func TestFenceKeepsLiveWriters(t *testing.T) {
	cfg := kappatest.ClickHouse(t)
	a, b := open(t, cfg), open(t, cfg)
	live := []string{"member-a", "member-b"}
	for _, s := range []struct {
		store  *clickhouse.Store
		member string
	}{{a, "member-a"}, {b, "member-b"}, {a, "member-a"}} {
		if err := s.store.Fence(t.Context(), s.member, live); err != nil {
			t.Fatal(err)
		}
	}
	st := projectiontest.Stream()
	if err := a.Apply(t.Context(), kappatest.From(st.Records, map[int32]int64{1: 1 << 40, 2: 1 << 40})); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(t.Context(), kappatest.From(st.Records, map[int32]int64{0: 1 << 40})); err != nil {
		t.Fatal(err)
	}
	if d := projectiontest.Diff(contents(t, a), want); d != "" {
		t.Fatalf("contents:%s", d)
	}
	if gates := gateTables(t, a); len(gates) != 10 {
		t.Fatalf("gates %v, want five for each of two writers", gates)
	}
}

func gateTables(t *testing.T, s *clickhouse.Store) []string {
	t.Helper()
	rows, err := s.Conn().Query(t.Context(), "SELECT name FROM system.tables WHERE database = ? AND startsWith(name, 'writer_') ORDER BY name", s.Database())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}
