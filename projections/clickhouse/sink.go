package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Table names and their insert columns. The events table comes last in
// insertOrder: its max(offset) is the resume position, so it may only move
// once every typed table has the batch.
const (
	tableEvents     = "events"
	tableCartLines  = "cart_lines"
	tableOrders     = "orders"
	tableOrderLines = "order_lines"
	tableArticles   = "articles"
)

var columns = map[string][]string{
	tableEvents:     {"tenant", "event_id", "event_type", "schema_version", "aggregate_id", "aggregate_version", "command_id", "source", "occurred_at", "payload", "topic", "`partition`", "`offset`"},
	tableCartLines:  {"tenant", "event_id", "event_type", "cart_id", "product_id", "quantity_delta", "unit_price_cents", "cart_version", "occurred_at", "`partition`", "`offset`"},
	tableOrders:     {"tenant", "event_id", "order_id", "cart_id", "customer_id", "total_cents", "line_count", "item_count", "placed_at", "`partition`", "`offset`"},
	tableOrderLines: {"tenant", "event_id", "order_id", "customer_id", "product_id", "quantity", "unit_price_cents", "revenue_cents", "placed_at", "`partition`", "`offset`"},
	tableArticles:   {"tenant", "event_id", "event_type", "article_id", "author_id", "title", "tags", "tags_changed", "article_version", "occurred_at", "`partition`", "`offset`"},
}

var insertOrder = []string{tableCartLines, tableOrders, tableOrderLines, tableArticles, tableEvents}

// row is one row for one table, values in the order of columns[table].
type row struct {
	table  string
	values []any
}

// mapRecord maps one record to its rows. Outcome records and parked
// records have none: they are not events (a parked record's position still
// counts, through the batch's positions). Every row carries the tenant;
// ids are the aggregate's own, unique within it.
func mapRecord(r schemas.Record) []row {
	e := r.Envelope
	tenant := schemas.TenantOf(e)
	part, off := r.Position.Partition, r.Position.Offset
	var rows []row
	switch p := r.Payload.(type) {
	case schemas.Parked, schemas.Outcome:
		return nil
	case schemas.CartProductAddedV1:
		rows = append(rows, row{tableCartLines, []any{tenant, e.ID, e.Type, e.AggregateID, p.ProductID, p.Quantity, p.UnitPriceCents, uint64(e.AggregateVersion), e.Time, part, off}})
	case schemas.CartProductRemovedV1:
		rows = append(rows, row{tableCartLines, []any{tenant, e.ID, e.Type, e.AggregateID, p.ProductID, -p.Quantity, int64(0), uint64(e.AggregateVersion), e.Time, part, off}})
	case schemas.CartCheckedOutV1:
		var items int64
		for _, l := range p.Lines {
			items += l.Quantity
			rows = append(rows, row{tableOrderLines, []any{tenant, e.ID, p.OrderID, p.CustomerID, l.ProductID, l.Quantity, l.UnitPriceCents, l.Quantity * l.UnitPriceCents, e.Time, part, off}})
		}
		rows = append(rows, row{tableOrders, []any{tenant, e.ID, p.OrderID, e.AggregateID, p.CustomerID, p.TotalCents, uint32(len(p.Lines)), items, e.Time, part, off}})
	case schemas.ArticlePublishedV1:
		rows = append(rows, row{tableArticles, []any{tenant, e.ID, e.Type, e.AggregateID, p.AuthorID, &p.Title, nonNil(p.Tags), uint8(1), uint64(e.AggregateVersion), e.Time, part, off}})
	case schemas.ArticleUpdatedV1:
		var tags []string
		var changed uint8
		if p.Tags != nil {
			tags, changed = *p.Tags, 1
		}
		rows = append(rows, row{tableArticles, []any{tenant, e.ID, e.Type, e.AggregateID, "", p.Title, nonNil(tags), changed, uint64(e.AggregateVersion), e.Time, part, off}})
	}
	// Every event, known to a typed table or not, lands in the events table.
	rows = append(rows, row{tableEvents, []any{tenant, e.ID, e.Type, uint16(e.SchemaVersion), e.AggregateID, uint64(e.AggregateVersion), e.CommandID, e.Source, e.Time, string(e.Data), r.Topic, part, off}})
	return rows
}

// refusedData are ClickHouse error codes caused by the values inserted:
// cannot parse, type mismatch, argument out of bound, cannot convert,
// incorrect data, value out of range of the data type.
var refusedData = map[int32]bool{6: true, 27: true, 53: true, 69: true, 70: true, 117: true, 321: true}

// Permanent reports errors caused by the records themselves; the projector
// parks such a record instead of retrying it forever.
func (s *Store) Permanent(err error) bool {
	var ex *ch.Exception
	return errors.As(err, &ex) && refusedData[ex.Code]
}

// BindTopic records the id of the topic the projection is built from, if
// none is recorded yet, and returns the recorded one (the first written,
// should two instances race).
func (s *Store) BindTopic(ctx context.Context, topic, topicID string) (string, error) {
	bound, err := s.boundTopic(ctx, topic)
	if err != nil || bound != "" {
		return bound, err
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+".projection_topics (topic, topic_id, bound_at)")
	if err != nil {
		return "", fmt.Errorf("bind topic %s: %w", topic, err)
	}
	if err := batch.Append(topic, topicID, time.Now().UTC()); err != nil {
		return "", fmt.Errorf("bind topic %s: %w", topic, err)
	}
	if err := batch.Send(); err != nil {
		return "", fmt.Errorf("bind topic %s: %w", topic, err)
	}
	return s.boundTopic(ctx, topic)
}

func (s *Store) boundTopic(ctx context.Context, topic string) (string, error) {
	rows, err := s.conn.Query(ctx, "SELECT topic_id FROM "+s.cfg.Database+".projection_topics WHERE topic = ? ORDER BY bound_at, topic_id LIMIT 1", topic)
	if err != nil {
		return "", fmt.Errorf("read the topic %s is bound to: %w", topic, err)
	}
	defer func() { _ = rows.Close() }()
	var id string
	if rows.Next() {
		if err := rows.Scan(&id); err != nil {
			return "", err
		}
	}
	return id, rows.Err()
}

// Resume returns the offset after the highest one in the events table,
// which is written last, and refreshes what every table already holds.
func (s *Store) Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(ctx, topic, partitions); err != nil {
		return nil, err
	}
	next := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		if o, ok := s.held[tableEvents][p]; ok {
			next[p] = o + 1
		}
	}
	return next, nil
}

// refresh reads max(offset) per partition of every table. Inserts into one
// table are atomic and in offset order per partition, so a table holds
// exactly the rows of its partition up to that offset.
func (s *Store) refresh(ctx context.Context, topic string, partitions []int32) error {
	for _, t := range insertOrder {
		got, err := s.maxOffsets(ctx, t, topic, partitions)
		if err != nil {
			return err
		}
		if s.held[t] == nil {
			s.held[t] = map[int32]int64{}
		}
		for _, p := range partitions {
			if o, ok := got[p]; ok {
				s.held[t][p] = o
			} else {
				delete(s.held[t], p)
			}
		}
	}
	for _, p := range partitions {
		s.known[p] = true
	}
	return nil
}

// maxOffsets returns max(offset) per partition of a table. Typed tables do
// not store the topic; one database projects one events topic.
func (s *Store) maxOffsets(ctx context.Context, table, topic string, partitions []int32) (map[int32]int64, error) {
	// The partition list is formatted in: 18.16 refuses an array bound to IN.
	ids := make([]string, len(partitions))
	for i, p := range partitions {
		ids[i] = strconv.Itoa(int(p))
	}
	where := "`partition` IN (" + strings.Join(ids, ", ") + ")"
	var args []any
	if table == tableEvents {
		where += " AND topic = ?"
		args = append(args, topic)
	}
	q := fmt.Sprintf("SELECT `partition`, max(`offset`) FROM %s.%s WHERE %s GROUP BY `partition`", s.cfg.Database, table, where)
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read max offsets of %s: %w", table, err)
	}
	defer rows.Close()
	out := map[int32]int64{}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			return nil, fmt.Errorf("scan max offsets of %s: %w", table, err)
		}
		out[p] = o
	}
	return out, rows.Err()
}

// Apply inserts a batch: typed tables first, the events table last, one
// insert per table, skipping rows a table already holds. After a failed
// insert, which may have been written anyway, what the tables hold is read
// again before the next attempt, so applying a batch twice leaves one copy.
func (s *Store) Apply(ctx context.Context, batch []schemas.Record) error {
	if len(batch) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var unknown []int32
	batchMax := map[int32]int64{}
	for _, r := range batch {
		p := r.Position.Partition
		if _, seen := batchMax[p]; !seen && !s.known[p] {
			unknown = append(unknown, p)
		}
		batchMax[p] = max(batchMax[p], r.Position.Offset)
	}
	if len(unknown) > 0 {
		if err := s.refresh(ctx, batch[0].Topic, unknown); err != nil {
			return err
		}
	}
	byTable := map[string][][]any{}
	for _, r := range batch {
		for _, rw := range mapRecord(r) {
			if held, ok := s.held[rw.table][r.Position.Partition]; ok && r.Position.Offset <= held && !brokenForFaultTests {
				continue
			}
			byTable[rw.table] = append(byTable[rw.table], rw.values)
		}
	}
	for _, t := range insertOrder {
		if err := s.insert(ctx, t, byTable[t]); err != nil {
			for p := range batchMax {
				delete(s.known, p)
			}
			return err
		}
	}
	for _, t := range insertOrder {
		for p, o := range batchMax {
			s.held[t][p] = max(s.held[t][p], o)
		}
	}
	return nil
}

func (s *Store) insert(ctx context.Context, table string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (%s)", s.cfg.Database, s.target(table), strings.Join(columns[table], ", ")))
	if err != nil {
		return s.fenced(fmt.Errorf("prepare insert into %s: %w", table, err))
	}
	for _, r := range rows {
		if err := b.Append(r...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append row to %s: %w", table, err)
		}
	}
	if err := b.Send(); err != nil {
		return s.fenced(fmt.Errorf("insert %d rows into %s: %w", len(rows), table, err))
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ApplyRedriven inserts parked records that were fixed. Their offsets are
// below what the tables hold, so the offset rule cannot dedupe them;
// instead each table is asked which of their event ids it already has, and
// an event is inserted into a table only if it is not there yet. Asking
// and inserting happen under the database's redrive lock, so that an
// operator's `kappa dlq redrive` and a projector redriving the same
// records at the same moment cannot both insert them.
func (s *Store) ApplyRedriven(ctx context.Context, batch []schemas.Record) error {
	unlock, err := s.lockRedrive(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	byTable := map[string][][]any{}
	for _, r := range batch {
		for _, rw := range mapRecord(r) {
			byTable[rw.table] = append(byTable[rw.table], rw.values)
		}
	}
	for _, t := range insertOrder {
		rows := byTable[t]
		if len(rows) == 0 {
			continue
		}
		id := slices.Index(columns[t], "event_id")
		present, err := s.presentEventIDs(ctx, t, rows, id)
		if err != nil {
			return err
		}
		var missing [][]any
		for _, row := range rows {
			if !present[row[id].(string)] {
				missing = append(missing, row)
			}
		}
		if err := s.insert(ctx, t, missing); err != nil {
			return err
		}
	}
	return nil
}

// presentEventIDs returns which event ids of rows (column id) a table has.
func (s *Store) presentEventIDs(ctx context.Context, table string, rows [][]any, id int) (map[string]bool, error) {
	quoted := make([]string, 0, len(rows))
	for _, row := range rows {
		quoted = append(quoted, "'"+strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(row[id].(string))+"'")
	}
	res, err := s.conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT event_id FROM %s.%s WHERE event_id IN (%s)", s.cfg.Database, table, strings.Join(quoted, ", ")))
	if err != nil {
		return nil, fmt.Errorf("read event ids of %s: %w", table, err)
	}
	defer res.Close()
	present := map[string]bool{}
	for res.Next() {
		var id string
		if err := res.Scan(&id); err != nil {
			return nil, err
		}
		present[id] = true
	}
	return present, res.Err()
}

// staleRedriveLock is how old a redrive lock may be before it is taken for
// one its holder left behind when it died.
const staleRedriveLock = 2 * time.Minute

// codeTableAlreadyExists is ClickHouse's TABLE_ALREADY_EXISTS.
const codeTableAlreadyExists = 57

// lockRedrive takes the database's redrive lock.
func (s *Store) lockRedrive(ctx context.Context) (unlock func(), err error) {
	return s.lock(ctx, "redrive_lock", staleRedriveLock)
}

// lock takes a lock of the database: a table that only one CREATE TABLE
// can make, ClickHouse having no other lock a client can hold. A lock
// older than stale is broken: its holder died.
func (s *Store) lock(ctx context.Context, table string, stale time.Duration) (unlock func(), err error) {
	name := s.cfg.Database + "." + table
	for {
		err := s.conn.Exec(ctx, "CREATE TABLE "+name+" (taken UInt8) ENGINE = Memory")
		if err == nil {
			return func() {
				if err := s.conn.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+name); err != nil {
					s.log.Warn("release the lock "+table+"; it is broken after "+stale.String(), "err", err)
				}
			}, nil
		}
		var ex *ch.Exception
		if !errors.As(err, &ex) || ex.Code != codeTableAlreadyExists {
			return nil, fmt.Errorf("take the lock %s: %w", table, err)
		}
		var age int64
		if err := s.conn.QueryRow(ctx, "SELECT toInt64(now() - metadata_modification_time) FROM system.tables WHERE database = ? AND name = ?",
			s.cfg.Database, table).Scan(&age); err == nil && time.Duration(age)*time.Second > stale {
			s.log.Warn("breaking a lock its holder left behind", "lock", table, "age_seconds", age)
			_ = s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+name)
			continue
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
