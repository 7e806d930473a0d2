package clickhouse

import (
	"context"
	"testing"

	"github.com/kappa-cqrs/kappa/schemas"
)

// ApplyTypedOnly inserts a batch into the typed tables but not the events
// table, as a crash between the inserts of Apply would leave it.
func (s *Store) ApplyTypedOnly(ctx context.Context, batch []schemas.Record) error {
	byTable := map[string][][]any{}
	for _, r := range batch {
		for _, rw := range mapRecord(r) {
			byTable[rw.table] = append(byTable[rw.table], rw.values)
		}
	}
	for _, t := range insertOrder[:len(insertOrder)-1] {
		if err := s.insert(ctx, t, byTable[t]); err != nil {
			return err
		}
	}
	return nil
}

// WriterID is the name part of a member's gates.
func WriterID(member string) string { return writerID(member) }

// MigrateTo applies the migrations up to version last, as a deployment of
// an earlier Kappa left the database.
func (s *Store) MigrateTo(ctx context.Context, last int) error { return s.migrate(ctx, last) }

// UpgradeSteps returns the statements of a database made by an earlier
// Kappa (migrations before 0003) and, apart, those that migration 0003
// runs over it, as the server of the given version would.
func UpgradeSteps(t *testing.T, db string, major int) (before, upgrade []string) {
	t.Helper()
	before, m, have := earlierDatabase(t, db, major)
	upgrade, err := TenantSteps(db, major, m, have)
	if err != nil {
		t.Fatal(err)
	}
	return before, upgrade
}
