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

// Permanent reports errors caused by the records themselves: events the
// read models cannot hold, Postgres data exceptions (SQLSTATE class 22) and
// integrity constraint violations (class 23). Retrying them cannot help; the projector parks the record.
func (s *Store) Permanent(err error) bool {
	if errors.As(err, new(refusedEvent)) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")
}

// BindTopic records the id of the topic the projection is built from, if
// none is recorded yet, and returns the recorded one.
func (s *Store) BindTopic(ctx context.Context, topic, topicID string) (string, error) {
	var bound string
	err := s.pool.QueryRow(ctx, `WITH bound AS (
			INSERT INTO projection_topics (topic, topic_id, bound_at) VALUES ($1, $2, now())
			ON CONFLICT (topic) DO NOTHING RETURNING topic_id
		)
		SELECT topic_id FROM bound UNION ALL SELECT topic_id FROM projection_topics WHERE topic = $1`, topic, topicID).Scan(&bound)
	if err != nil {
		return "", fmt.Errorf("bind topic %s: %w", topic, err)
	}
	return bound, nil
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
	q, err := planRecords(ctx, tx, fresh)
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

// outcomeRows are command outcomes as the columns one INSERT unnests.
type outcomeRows struct {
	ids, types, aggregates, statuses, events []string
	codes, details                           []*string
	partitions                               []int32
	offsets                                  []int64
	decidedAt                                []time.Time
}

func (o *outcomeRows) add(e schemas.Envelope, p schemas.Outcome) error {
	events, err := json.Marshal(nonNilRefs(p.Events))
	if err != nil {
		return err
	}
	var code, detail *string
	if p.Rejection != nil {
		code, detail = &p.Rejection.Code, &p.Rejection.Detail
	}
	o.ids, o.types, o.aggregates = append(o.ids, p.CommandID), append(o.types, p.CommandType), append(o.aggregates, p.AggregateID)
	o.statuses, o.events = append(o.statuses, p.Status), append(o.events, string(events))
	o.codes, o.details = append(o.codes, code), append(o.details, detail)
	o.partitions, o.offsets = append(o.partitions, p.CommandPosition.Partition), append(o.offsets, p.CommandPosition.Offset)
	o.decidedAt = append(o.decidedAt, e.Time)
	return nil
}

// planRecords locks what records touch and maps them to statements.
func planRecords(ctx context.Context, tx pgx.Tx, records []schemas.Record) (*pgx.Batch, error) {
	cartVersions, err := lockCarts(ctx, tx, records)
	if err != nil {
		return nil, err
	}
	return queueRecords(records, cartVersions)
}

// queueRecords maps records, in order, to the statements that apply them.
// Cart events at or below the cart's version before the batch were applied
// already and are skipped, so an event older than the row is a no-op even
// if positions were lost. The rest is folded into a fixed number of
// set-based statements (two for lines, one for carts, one for orders, one
// for command outcomes, two per round of article events), so the statement
// count does not grow with the batch.
func queueRecords(records []schemas.Record, cartVersions map[string]int64) (*pgx.Batch, error) {
	var (
		carts    cartsTouched
		lines    lineChanges
		orders   orderRows
		outcomes outcomeRows
		articles articleRounds
		q        = &pgx.Batch{}
	)
	for _, r := range records {
		e := r.Envelope
		if isCartEvent(r.Payload) {
			if e.AggregateVersion <= cartVersions[schemas.KeyOf(e)] {
				continue
			}
			carts.touch(e)
		}
		var err error
		switch p := r.Payload.(type) {
		case schemas.Parked:
			// Only its position counts.
		case schemas.Outcome:
			if p.CommandID != "" {
				err = outcomes.add(e, p)
			}
		case schemas.CartProductAddedV1:
			if p.Quantity <= 0 || p.UnitPriceCents < 0 {
				err = refusedEvent(fmt.Sprintf("quantity %d and unit price %d: a line holds a positive quantity at a price of 0 or more", p.Quantity, p.UnitPriceCents))
			}
			lines.add(lineKey{schemas.KeyOf(e), p.ProductID}, added(p.Quantity, p.UnitPriceCents))
		case schemas.CartProductRemovedV1:
			if p.Quantity <= 0 {
				err = refusedEvent(fmt.Sprintf("quantity %d: a removal takes a positive quantity", p.Quantity))
			}
			lines.add(lineKey{schemas.KeyOf(e), p.ProductID}, removed(p.Quantity))
		case schemas.CartCheckedOutV1:
			carts.checkedOut(schemas.KeyOf(e), p.CustomerID)
			err = orders.add(e, p)
		default:
			err = articles.add(r)
		}
		if err != nil {
			return nil, fmt.Errorf("map %s at %s/%s: %w", e.Type, r.Topic, r.Position, err)
		}
	}
	articles.queue(q)
	growing, other := lines.split()
	if len(growing.carts) > 0 {
		q.Queue(growLines, growing.carts, growing.products, growing.deltas, growing.prices)
	}
	if len(other.carts) > 0 {
		q.Queue(changeLines, other.carts, other.products, other.deltas, other.floors, other.prices)
	}
	if len(carts.ids) > 0 {
		versions, at, customers := carts.columns()
		q.Queue(updateCarts, carts.ids, versions, at, customers)
	}
	if o := orders; len(o.ids) > 0 {
		q.Queue(`INSERT INTO orders (id, cart_id, customer_id, total_cents, lines, placed_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[], $6::timestamptz[])
			ON CONFLICT (id) DO NOTHING`, o.ids, o.carts, o.customers, o.totals, o.lines, o.placedAt)
	}
	if o := outcomes; len(o.ids) > 0 {
		q.Queue(`INSERT INTO command_outcomes (command_id, command_type, aggregate_id, status, rejection_code, rejection_detail,
				events, command_partition, command_offset, decided_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::integer[],
				$9::bigint[], $10::timestamptz[])
			ON CONFLICT (command_id) DO NOTHING`,
			o.ids, o.types, o.aggregates, o.statuses, o.codes, o.details, o.events, o.partitions, o.offsets, o.decidedAt)
	}
	return q, nil
}

// refusedEvent is an event the read models cannot hold. Folded events no
// longer meet cart_items' CHECK constraints one by one, so the fold checks
// what those constraints would have refused.
type refusedEvent string

func (e refusedEvent) Error() string { return "refused: " + string(e) }

// orderRows are the orders checkouts place, as the columns one INSERT unnests.
type orderRows struct {
	ids, carts, customers, lines []string
	totals                       []int64
	placedAt                     []time.Time
}

func (o *orderRows) add(e schemas.Envelope, p schemas.CartCheckedOutV1) error {
	lines, err := json.Marshal(p.Lines)
	if err != nil {
		return err
	}
	o.ids, o.carts, o.customers = append(o.ids, schemas.AggregateKey(e.Tenant, p.OrderID)), append(o.carts, schemas.KeyOf(e)), append(o.customers, p.CustomerID)
	o.lines, o.totals, o.placedAt = append(o.lines, string(lines)), append(o.totals, p.TotalCents), append(o.placedAt, e.Time)
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
	q, err := planRecords(ctx, tx, batch)
	if err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
		return fmt.Errorf("apply %d redriven records: %w", len(batch), err)
	}
	return tx.Commit(ctx)
}
