package processor

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
)

// TestThePresenceFilterNeverMissesAStoredAggregate: a filter built from a
// store while aggregates keep being committed answers "may hold" for every
// aggregate of its partition, those stored before the build and those
// committed during it and after, and "certainly not" for most ids the
// store never held; past its size it asks to be rebuilt, twice as large.
func TestThePresenceFilterNeverMissesAStoredAggregate(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), "store"), 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.close() }()
	const part = 3
	commit := func(ids ...string) {
		t.Helper()
		b := st.newBatch()
		for _, id := range ids {
			// The neighbouring partitions' aggregates are not the filter's.
			for _, p := range []int32{part - 1, part, part + 1} {
				if err := b.b.Set(storeKey(kindAggregate, p, id), []byte("state"), nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := b.commit(); err != nil {
			t.Fatal(err)
		}
	}
	var stored []string
	for i := range 30000 {
		stored = append(stored, fmt.Sprintf("cart-%d", i))
	}
	commit(stored...)

	pr := &presence{}
	if !pr.mayHold("anything") {
		t.Fatal("before its first build the filter says an id is certainly absent; the store must be asked")
	}
	capacity, ok := pr.needsBuild(int64(len(stored)))
	if !ok || capacity != 2*uint(len(stored)) {
		t.Fatalf("a partition of %d aggregates without a filter: build %v of capacity %d, want a build of %d", len(stored), ok, capacity, 2*len(stored))
	}
	if _, again := pr.needsBuild(int64(len(stored))); again {
		t.Fatal("a second build was started while the first runs")
	}
	filled, err := fill(context.Background(), st, part, capacity)
	// Commits after the build read the store and before it serves: the
	// Run goroutine's order, store first.
	for i := range 50 {
		created := map[string]bool{}
		for j := range 20 {
			created[fmt.Sprintf("article-%d-%d", i, j)] = true
		}
		var ids []string
		for id := range created {
			ids = append(ids, id)
		}
		commit(ids...)
		pr.stored(created)
		stored = append(stored, ids...)
	}
	if err := pr.serve(filled, err); err != nil {
		t.Fatal(err)
	}
	after := map[string]bool{"order-1": true, "order-2": true}
	commit("order-1", "order-2")
	pr.stored(after)
	stored = append(stored, "order-1", "order-2")

	for _, id := range stored {
		if !pr.mayHold(id) {
			t.Fatalf("the filter says %s is certainly absent, but the store holds it", id)
		}
	}
	passed := 0
	for i := range 10000 {
		if pr.mayHold(fmt.Sprintf("never-%d", i)) {
			passed++
		}
	}
	// Sized for 1% at its capacity and holding about half of it.
	if passed > 300 {
		t.Fatalf("the filter let %d of 10000 absent ids through to the store, want about 1%% or fewer", passed)
	}
	if pr.memoryBytes() == 0 {
		t.Fatal("a built filter reports no memory")
	}
	if _, ok := pr.needsBuild(int64(capacity)); ok {
		t.Fatal("a filter at its capacity asked to be rebuilt")
	}
	if grown, ok := pr.needsBuild(int64(capacity) + 1); !ok || grown != 2*(capacity+1) {
		t.Fatalf("a partition past its filter's capacity %d: rebuild %v of %d, want one of %d", capacity, ok, grown, 2*(capacity+1))
	}
}

// TestAFailedPresenceBuildLeavesLookUpsToTheStore: a build that stops
// (the processor is closing) serves no filter, so every id goes to the
// store, and it is not retried until the partition outgrows it.
func TestAFailedPresenceBuildLeavesLookUpsToTheStore(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), "store"), 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.close() }()
	b := st.newBatch()
	for i := range 10000 {
		if err := b.b.Set(storeKey(kindAggregate, 0, fmt.Sprintf("cart-%d", i)), []byte("state"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.commit(); err != nil {
		t.Fatal(err)
	}
	pr := &presence{}
	capacity, _ := pr.needsBuild(10000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := pr.build(ctx, st, 0, capacity); err == nil {
		t.Fatal("a build whose context ended reported success")
	}
	if !pr.mayHold("never-1") || pr.memoryBytes() != 0 {
		t.Fatal("a failed build left a filter serving")
	}
	if _, ok := pr.needsBuild(10000); ok {
		t.Fatal("a failed build is retried at once")
	}
}
