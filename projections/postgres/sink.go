package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Permanent reports errors caused by the records themselves: Postgres
// data exceptions (SQLSTATE class 22) and integrity constraint violations
// (class 23). Retrying them cannot help; the consumer parks the record.
func (s *Store) Permanent(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")
}

// Resume returns the next offset per partition recorded with the data.
func (s *Store) Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT partition, next_offset FROM projection_positions WHERE topic = $1 AND partition = ANY($2)`,
		topic, partitions)
	if err != nil {
		return nil, fmt.Errorf("read positions of %s: %w", topic, err)
	}
	next := map[int32]int64{}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			return nil, err
		}
		next[p] = o
	}
	return next, rows.Err()
}

type partitionProgress struct {
	next            int64 // next offset to apply, from the table
	seen            int64 // highest offset in this batch, -1 if none
	commandsThrough int64
}

// Apply writes a batch and its positions in one transaction. The position
// rows are locked first and records below them are skipped, so a batch
// redelivered to a second instance after a rebalance applies nothing twice.
func (s *Store) Apply(ctx context.Context, batch []schemas.Record) error {
	if len(batch) == 0 {
		return nil
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit

	topic := batch[0].Topic
	progress, err := lockPositions(ctx, tx, topic, batch)
	if err != nil {
		return err
	}
	fresh := make([]schemas.Record, 0, len(batch))
	for _, r := range batch {
		pp := progress[r.Position.Partition]
		if r.Position.Offset < pp.next {
			continue // already applied by an earlier batch
		}
		pp.seen = max(pp.seen, r.Position.Offset)
		if o, ok := r.Payload.(schemas.Outcome); ok {
			pp.commandsThrough = max(pp.commandsThrough, o.CommandPosition.Offset)
		}
		fresh = append(fresh, r)
	}
	q, err := queueRecords(fresh)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for p, pp := range progress {
		if pp.seen < 0 {
			continue
		}
		q.Queue(`UPDATE projection_positions SET next_offset = $3, commands_through = greatest(commands_through, $4), updated_at = $5
			WHERE topic = $1 AND partition = $2`, topic, p, pp.seen+1, pp.commandsThrough, now)
	}
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
		return fmt.Errorf("apply batch of %d records: %w", len(batch), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit batch: %w", err)
	}
	return nil
}

func lockPositions(ctx context.Context, tx pgx.Tx, topic string, batch []schemas.Record) (map[int32]*partitionProgress, error) {
	var partitions []int32
	seen := map[int32]bool{}
	for _, r := range batch {
		if !seen[r.Position.Partition] {
			seen[r.Position.Partition] = true
			partitions = append(partitions, r.Position.Partition)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_positions (topic, partition, next_offset, commands_through, updated_at)
		SELECT $1, p, 0, -1, now() FROM unnest($2::integer[]) AS p ON CONFLICT DO NOTHING`, topic, partitions); err != nil {
		return nil, fmt.Errorf("create positions: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT partition, next_offset, commands_through FROM projection_positions
		WHERE topic = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE`, topic, partitions)
	if err != nil {
		return nil, fmt.Errorf("lock positions: %w", err)
	}
	progress := map[int32]*partitionProgress{}
	for rows.Next() {
		var p int32
		pp := &partitionProgress{seen: -1}
		if err := rows.Scan(&p, &pp.next, &pp.commandsThrough); err != nil {
			return nil, err
		}
		progress[p] = pp
	}
	return progress, rows.Err()
}

// queueRecords maps records, in order, to the statements that apply them.
// Work that is per cart rather than per event is done once per batch: the
// cart rows are created before the events' statements (whose version guards
// read them), and each cart's total and version are set after them. The
// guards therefore compare with the version before the batch, which is
// right: a batch holds each event once, in order.
func queueRecords(records []schemas.Record) (*pgx.Batch, error) {
	type touch struct {
		version int64
		at      time.Time
	}
	touched := map[string]*touch{}
	var ids, created []string
	var createdAt []time.Time
	for _, r := range records {
		switch r.Payload.(type) {
		case schemas.CartProductAddedV1, schemas.CartProductRemovedV1, schemas.CartCheckedOutV1:
		default:
			continue
		}
		id := r.Envelope.AggregateID
		t, ok := touched[id]
		if !ok {
			t = &touch{}
			touched[id] = t
			ids = append(ids, id)
			if _, added := r.Payload.(schemas.CartProductAddedV1); added {
				created = append(created, id)
				createdAt = append(createdAt, r.Envelope.Time)
			}
		}
		t.version = max(t.version, r.Envelope.AggregateVersion)
		if r.Envelope.Time.After(t.at) {
			t.at = r.Envelope.Time
		}
	}
	q := &pgx.Batch{}
	if len(created) > 0 {
		q.Queue(`INSERT INTO carts (id, status, total_cents, version, updated_at)
			SELECT id, 'open', 0, 0, at FROM unnest($1::text[], $2::timestamptz[]) AS t(id, at)
			ON CONFLICT (id) DO NOTHING`, created, createdAt)
	}
	for _, r := range records {
		if err := queueRecord(q, r); err != nil {
			return nil, fmt.Errorf("map %s at %s/%s: %w", r.Envelope.Type, r.Topic, r.Position, err)
		}
	}
	if len(ids) > 0 {
		versions := make([]int64, len(ids))
		ats := make([]time.Time, len(ids))
		for i, id := range ids {
			versions[i], ats[i] = touched[id].version, touched[id].at
		}
		q.Queue(`UPDATE carts c SET
				total_cents = coalesce((SELECT sum(i.quantity * i.unit_price_cents) FROM cart_items i WHERE i.cart_id = c.id), 0),
				version = greatest(c.version, t.version), updated_at = greatest(c.updated_at, t.at)
			FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS t(id, version, at)
			WHERE c.id = t.id`, ids, versions, ats)
	}
	return q, nil
}

// queueRecord maps one record to the statements that apply it. Each
// statement on an aggregate is guarded by the aggregate's version, so an
// event older than the row is a no-op even if positions were lost.
func queueRecord(q *pgx.Batch, r schemas.Record) error {
	e := r.Envelope
	v := e.AggregateVersion
	switch p := r.Payload.(type) {
	case nil:
		// Parked in the dead-letter topic; only its position counts.
	case schemas.Outcome:
		if p.CommandID == "" {
			return nil
		}
		events, err := json.Marshal(nonNilRefs(p.Events))
		if err != nil {
			return err
		}
		var code, detail *string
		if p.Rejection != nil {
			code, detail = &p.Rejection.Code, &p.Rejection.Detail
		}
		q.Queue(`INSERT INTO command_outcomes (command_id, command_type, aggregate_id, status, rejection_code, rejection_detail,
				events, command_partition, command_offset, decided_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (command_id) DO NOTHING`,
			p.CommandID, p.CommandType, p.AggregateID, p.Status, code, detail, string(events),
			p.CommandPosition.Partition, p.CommandPosition.Offset, e.Time)
	case schemas.ArticlePublishedV1:
		q.Queue(`INSERT INTO articles (id, author_id, title, body, tags, version, published_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			ON CONFLICT (id) DO UPDATE SET author_id = EXCLUDED.author_id, title = EXCLUDED.title, body = EXCLUDED.body,
				tags = EXCLUDED.tags, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
			WHERE articles.version < EXCLUDED.version`,
			e.AggregateID, p.AuthorID, p.Title, p.Body, nonNilTags(p.Tags), v, e.Time)
	case schemas.ArticleUpdatedV1:
		var tags []string
		if p.Tags != nil {
			tags = nonNilTags(*p.Tags)
		}
		q.Queue(`UPDATE articles SET title = coalesce($2, title), body = coalesce($3, body), tags = coalesce($4, tags),
				version = $5, updated_at = $6
			WHERE id = $1 AND version < $5`,
			e.AggregateID, p.Title, p.Body, tags, v, e.Time)
	case schemas.CartProductAddedV1:
		q.Queue(`INSERT INTO cart_items (cart_id, product_id, quantity, unit_price_cents)
			SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM carts WHERE id = $1 AND version < $5)
			ON CONFLICT (cart_id, product_id) DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity,
				unit_price_cents = EXCLUDED.unit_price_cents`,
			e.AggregateID, p.ProductID, p.Quantity, p.UnitPriceCents, v)
	case schemas.CartProductRemovedV1:
		// Delete before decrement: a decremented line must not then match the delete.
		q.Queue(`DELETE FROM cart_items
			WHERE cart_id = $1 AND product_id = $2 AND quantity <= $3
				AND EXISTS (SELECT 1 FROM carts WHERE id = $1 AND version < $4)`,
			e.AggregateID, p.ProductID, p.Quantity, v)
		q.Queue(`UPDATE cart_items SET quantity = quantity - $3
			WHERE cart_id = $1 AND product_id = $2 AND quantity > $3
				AND EXISTS (SELECT 1 FROM carts WHERE id = $1 AND version < $4)`,
			e.AggregateID, p.ProductID, p.Quantity, v)
	case schemas.CartCheckedOutV1:
		lines, err := json.Marshal(p.Lines)
		if err != nil {
			return err
		}
		q.Queue(`INSERT INTO orders (id, cart_id, customer_id, total_cents, lines, placed_at)
			SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM carts WHERE id = $2 AND version < $7)
			ON CONFLICT (id) DO NOTHING`,
			p.OrderID, e.AggregateID, p.CustomerID, p.TotalCents, string(lines), e.Time, v)
		q.Queue(`UPDATE carts SET status = 'checked_out', customer_id = $2, version = $3, updated_at = $4
			WHERE id = $1 AND version < $3`, e.AggregateID, p.CustomerID, v, e.Time)
	default:
		return fmt.Errorf("no mapping for %T", p)
	}
	return nil
}

func nonNilTags(tags []string) []string {
	if tags == nil {
		return []string{}
	}
	return tags
}

func nonNilRefs(refs []schemas.EventRef) []schemas.EventRef {
	if refs == nil {
		return []schemas.EventRef{}
	}
	return refs
}

// ApplyRedriven applies parked records that were fixed, in one transaction.
// Positions are not touched (the stream has moved on); the aggregate
// version guards make a second redrive of the same records a no-op.
func (s *Store) ApplyRedriven(ctx context.Context, batch []schemas.Record) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	q, err := queueRecords(batch)
	if err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
		return fmt.Errorf("apply %d redriven records: %w", len(batch), err)
	}
	return tx.Commit(ctx)
}
