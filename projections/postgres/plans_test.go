package postgres_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/postgres"
)

// A projection starts on empty tables, and pgx prepares its statements.
// Postgres then chose, from the sixth batch on, a generic plan costed for
// the empty table: for the cart lock a sequential scan that tests every row
// against every id of the batch, which took a second per batch once the
// table had grown (seen in the load test). The store's sessions plan each
// execution with its actual arguments instead, and find rows by key.
func TestBatchStatementsArePlannedForEachBatch(t *testing.T) {
	store := open(t, kappatest.Postgres(t))
	ctx := t.Context()
	conn, err := store.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Conn().Prepare(ctx, "lock_carts", postgres.LockCartsQuery); err != nil {
		t.Fatal(err)
	}
	const batches, perBatch = 8, 2000
	for b := range batches {
		if _, err := conn.Exec(ctx, `INSERT INTO carts (id, status, version, updated_at)
			SELECT 'cart-' || i, 'open', 1, now() FROM generate_series($1::int, $2::int) AS i`, b*perBatch, (b+1)*perBatch-1); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, perBatch)
		for i := range ids {
			ids[i] = fmt.Sprintf("cart-%d", b*perBatch+i)
		}
		if _, err := conn.Exec(ctx, "lock_carts", ids); err != nil {
			t.Fatal(err)
		}
	}
	var generic, custom int
	if err := conn.QueryRow(ctx, `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'lock_carts'`).Scan(&generic, &custom); err != nil {
		t.Fatal(err)
	}
	if generic != 0 || custom != batches {
		t.Errorf("the cart lock ran %d times on a generic plan and %d times on a plan for its batch; want 0 and %d", generic, custom, batches)
	}

	// Updating a batch of carts finds them by key instead of hashing the
	// whole table, which Postgres's default costs chose up to about 50,000
	// carts (the cost grows with the table).
	if _, err := conn.Exec(ctx, `INSERT INTO carts (id, status, version, updated_at)
		SELECT 'more-' || i, 'open', 1, now() FROM generate_series(1, 20000) AS i`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE carts`); err != nil {
		t.Fatal(err)
	}
	ids, versions, at, customers := make([]string, 200), make([]int64, 200), make([]time.Time, 200), make([]*string, 200)
	for i := range ids {
		ids[i], versions[i], at[i] = fmt.Sprintf("cart-%d", i*50), 2, time.Now()
	}
	rows, err := conn.Query(ctx, "EXPLAIN "+postgres.UpdateCartsQuery, ids, versions, at, customers)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if text := strings.Join(lines, "\n"); strings.Contains(text, "Seq Scan on carts") {
		t.Errorf("updating 200 of %d carts scans the whole table:\n%s", batches*perBatch+20000, text)
	}
}
