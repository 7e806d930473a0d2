package processor

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestStoreSlotsAreTakenInTurn: processors without a stable transactional
// id share a group's store directories on a host, one each while they run,
// and a later one finds the store an earlier one left.
func TestStoreSlotsAreTakenInTurn(t *testing.T) {
	base := filepath.Join(t.TempDir(), "group")
	open := func() *store {
		t.Helper()
		st, err := openSlotStore(base, 1<<20, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	first, second := open(), open()
	if first.dir != base+"-0" || second.dir != base+"-1" {
		t.Fatalf("two running processors got %s and %s, want %s-0 and %s-1", first.dir, second.dir, base, base)
	}
	if err := first.db.Set([]byte("k"), []byte("v"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := first.close(); err != nil {
		t.Fatal(err)
	}
	third := open()
	defer func() { _ = third.close(); _ = second.close() }()
	if third.dir != base+"-0" {
		t.Fatalf("after the first stopped, the next got %s, want %s-0", third.dir, base)
	}
	if v, ok, err := third.get([]byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("the store the first left holds k = %q (found %v, err %v), want v", v, ok, err)
	}
}
