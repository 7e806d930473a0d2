package clickhouse

import (
	"context"

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
