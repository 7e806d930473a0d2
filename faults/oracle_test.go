package faults_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/schemas"
)

type check struct {
	name  string
	ok    bool
	found string
}

type report struct{ checks []check }

func (r *report) add(name string, ok bool, format string, args ...any) {
	r.checks = append(r.checks, check{name: name, ok: ok, found: fmt.Sprintf(format, args...)})
}

func (r *report) ok() bool { return len(r.failures()) == 0 }

func (r *report) failures() []check {
	var f []check
	for _, c := range r.checks {
		if !c.ok {
			f = append(f, c)
		}
	}
	return f
}

// logContents is what the events topic holds: the source of truth the
// stores are compared with.
type logContents struct {
	events   []schemas.Record // decodable domain events, in partition order
	outcomes map[string]int   // first-decision outcome records per command id
	poison   map[string]bool  // keys of records that cannot be decoded
	ends     map[int32]int64  // stable end offset per partition
	// lastData is the offset of each partition's last committed record;
	// after it come only transaction markers and aborted records, which
	// are never delivered.
	lastData map[int32]int64
}

func readLog(t *testing.T, brokers []string, topic string) logContents {
	t.Helper()
	records, ends := kappatest.ReadTopic(t, kafka.Connection{Brokers: brokers}, topic)
	lc := logContents{outcomes: map[string]int{}, poison: map[string]bool{}, ends: ends, lastData: map[int32]int64{}}
	for _, r := range records {
		lc.lastData[r.Partition] = max(lc.lastData[r.Partition], r.Offset)
		env, err := kafka.Envelope(r)
		if err != nil {
			lc.poison[string(r.Key)] = true
			continue
		}
		if env.Type == schemas.OutcomeType {
			o, err := schemas.DecodeOutcome(env.Data)
			if err != nil {
				lc.poison[string(r.Key)] = true
			} else if o.DuplicateOf == nil {
				lc.outcomes[o.CommandID]++
			}
			continue
		}
		payload, err := schemas.DecodeEvent(env)
		if err != nil {
			lc.poison[string(r.Key)] = true
			continue
		}
		lc.events = append(lc.events, schemas.Record{Topic: r.Topic, Position: kafka.Position(r), Envelope: env, Payload: payload})
	}
	return lc
}

func (c *cluster) injectPoison(n int) {
	c.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kappatest.Brokers(c.t)...))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	topic := kafka.TopicsFor(c.topics).Events
	var records []*kgo.Record
	for i := range n {
		id := fmt.Sprintf("poison-%d-%d", time.Now().UnixNano(), i)
		valid := schemas.Envelope{ID: id, Type: schemas.CartProductAdded, Source: "faults", Time: time.Now(), SchemaVersion: 1,
			AggregateID: id + "-payload", AggregateVersion: 1, Data: []byte(`{"product_id": 5}`)}
		unknown := valid
		unknown.AggregateID, unknown.Type, unknown.Data = id+"-type", "cart.exploded", []byte(`{}`)
		records = append(records,
			kafka.Record(topic, 0, valid),
			kafka.Record(topic, 0, unknown),
			&kgo.Record{Topic: topic, Key: []byte(id + "-envelope"), Value: []byte("not an event")})
	}
	if err := cl.ProduceSync(c.t.Context(), records...).FirstErr(); err != nil {
		c.t.Fatal(err)
	}
	c.record("inject poison", fmt.Sprintf("%d records into the events topic: bad payload, unknown type, no envelope", len(records)))
}

// check waits for the projections to catch up with the log, then compares
// every store with it.
func (c *cluster) check(t *testing.T, acked map[string]bool, timeout time.Duration) *report {
	t.Helper()
	r := &report{}
	ctx := t.Context()
	brokers := kappatest.Brokers(t)
	names := kafka.TopicsFor(c.topics)
	pg, err := pgx.Connect(ctx, c.pgDirect)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pg.Close(context.WithoutCancel(ctx)) }()
	if _, err := pg.Exec(ctx, "SET search_path = "+c.schema); err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(ctx, clickhouse.Config{Addr: []string{c.chProxy.target}, Database: c.database})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.Close() }()

	// Caught up: every acknowledged command has its outcome in Postgres,
	// Postgres has applied the whole log, ClickHouse holds every event.
	var lc logContents
	var previousEnds map[int32]int64
	deadline := time.Now().Add(timeout)
	for {
		lc = readLog(t, brokers, names.Events)
		caughtUp, why := c.caughtUp(ctx, pg, ch, acked, lc)
		if caughtUp && !maps.Equal(lc.ends, previousEnds) {
			// Compare with a log that has stopped growing: a snapshot
			// taken while the processors still decided the last commands
			// made the stores look ahead of it.
			caughtUp, why = false, "the log still grows"
		}
		previousEnds = lc.ends
		if caughtUp {
			break
		}
		if time.Now().After(deadline) {
			r.add("projections caught up with the log", false, "not within %s: %s", timeout, why)
			break
		}
		time.Sleep(time.Second) // polling the stores while they catch up
	}

	checkVersions(r, lc)
	c.checkOutcomes(ctx, r, pg, acked, lc)
	c.checkClickHouse(ctx, r, ch, lc)
	c.checkPostgres(ctx, r, pg, lc)
	c.checkPoison(t, r, ch, pg, brokers, names.EventsDeadLetter, lc)
	return r
}

func (c *cluster) caughtUp(ctx context.Context, pg *pgx.Conn, ch *clickhouse.Store, acked map[string]bool, lc logContents) (bool, string) {
	inLog := 0
	for id := range acked {
		if lc.outcomes[id] > 0 {
			inLog++
		}
	}
	if inLog < len(acked) {
		return false, fmt.Sprintf("the log has %d of %d outcomes", inLog, len(acked))
	}
	var outcomes int
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM command_outcomes WHERE command_id = ANY($1)", slices.Collect(maps.Keys(acked))).Scan(&outcomes); err != nil {
		return false, err.Error()
	}
	if outcomes < len(acked) {
		return false, fmt.Sprintf("postgres has %d of %d outcomes", outcomes, len(acked))
	}
	rows, err := pg.Query(ctx, "SELECT partition, next_offset FROM projection_positions")
	if err != nil {
		return false, err.Error()
	}
	next, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		P int32
		O int64
	}])
	if err != nil {
		return false, err.Error()
	}
	reached := map[int32]int64{}
	for _, n := range next {
		reached[n.P] = n.O
	}
	for p, last := range lc.lastData {
		if reached[p] <= last {
			return false, fmt.Sprintf("postgres partition %d at %d, the log's last record is %d", p, reached[p], last)
		}
	}
	var events uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM "+c.database+".events").Scan(&events); err != nil {
		return false, err.Error()
	}
	if int(events) < len(lc.events) {
		return false, fmt.Sprintf("clickhouse has %d of %d events", events, len(lc.events))
	}
	return true, ""
}

// checkVersions: each aggregate's events carry versions 1, 2, 3, ... in log
// order. A gap or a repeat means a processor decided from stale state.
func checkVersions(r *report, lc logContents) {
	last := map[string]int64{}
	var broken []string
	for _, e := range lc.events {
		id := e.Envelope.AggregateID
		if e.Envelope.AggregateVersion != last[id]+1 {
			broken = append(broken, fmt.Sprintf("%s v%d after v%d", id, e.Envelope.AggregateVersion, last[id]))
		}
		last[id] = e.Envelope.AggregateVersion
	}
	r.add("aggregate versions in the log run 1, 2, 3, ... (no stale decisions)", len(broken) == 0,
		"%d aggregates; %d out-of-sequence events %s", len(last), len(broken), sample(broken))
}

func (c *cluster) checkOutcomes(ctx context.Context, r *report, pg *pgx.Conn, acked map[string]bool, lc logContents) {
	var missing, multiple []string
	for id := range acked {
		switch n := lc.outcomes[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			multiple = append(multiple, id)
		}
	}
	r.add("every acknowledged command decided exactly once (log)", len(missing)+len(multiple) == 0,
		"%d acknowledged; %d without an outcome, %d decided twice %s", len(acked), len(missing), len(multiple), sample(append(missing, multiple...)))
	var inPG int
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM command_outcomes WHERE command_id = ANY($1)", slices.Collect(maps.Keys(acked))).Scan(&inPG); err != nil {
		r.add("every acknowledged command has its outcome in Postgres", false, "%v", err)
		return
	}
	r.add("every acknowledged command has its outcome in Postgres", inPG == len(acked), "%d of %d", inPG, len(acked))
}

func (c *cluster) checkClickHouse(ctx context.Context, r *report, ch *clickhouse.Store, lc logContents) {
	db := c.database
	counts := map[string]uint64{}
	rows, err := ch.Conn().Query(ctx, "SELECT event_id, count() FROM "+db+".events GROUP BY event_id")
	if err != nil {
		r.add("kappa.events holds each event exactly once", false, "%v", err)
		return
	}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			r.add("kappa.events holds each event exactly once", false, "%v", err)
			return
		}
		counts[id] = n
	}
	_ = rows.Close()
	var missing, duplicated, unexpected []string
	want := map[string]bool{}
	for _, e := range lc.events {
		want[e.Envelope.ID] = true
		switch counts[e.Envelope.ID] {
		case 0:
			missing = append(missing, e.Envelope.ID)
		case 1:
		default:
			duplicated = append(duplicated, e.Envelope.ID)
		}
	}
	for id := range counts {
		if !want[id] {
			unexpected = append(unexpected, id)
		}
	}
	r.add("kappa.events holds each event exactly once (count() per event_id)", len(missing)+len(duplicated)+len(unexpected) == 0,
		"%d events in the log; %d missing, %d duplicated, %d not in the log %s", len(lc.events), len(missing), len(duplicated), len(unexpected),
		sample(append(append(missing, duplicated...), unexpected...)))

	// Typed tables: one row per event (cart lines, orders, articles) or per
	// order line, each exactly once.
	var wantLines, wantOrders, wantOrderLines, wantArticles uint64
	for _, e := range lc.events {
		switch p := e.Payload.(type) {
		case schemas.CartProductAddedV1, schemas.CartProductRemovedV1:
			wantLines++
		case schemas.CartCheckedOutV1:
			wantOrders++
			wantOrderLines += uint64(len(p.Lines))
		case schemas.ArticlePublishedV1, schemas.ArticleUpdatedV1:
			wantArticles++
		}
	}
	for table, want := range map[string]uint64{"cart_lines": wantLines, "orders": wantOrders, "order_lines": wantOrderLines, "articles": wantArticles} {
		var total, dupes uint64
		err := ch.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count(), (SELECT count() FROM (SELECT event_id, product_id FROM %s.%s GROUP BY event_id, product_id HAVING count() > 1)) FROM %s.%s",
			db, table, db, table)).Scan(&total, &dupes)
		if table != "order_lines" {
			err = ch.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count(), (SELECT count() FROM (SELECT event_id FROM %s.%s GROUP BY event_id HAVING count() > 1)) FROM %s.%s",
				db, table, db, table)).Scan(&total, &dupes)
		}
		if err != nil {
			r.add("typed table "+table+" exactly once", false, "%v", err)
			continue
		}
		r.add("typed table "+table+" exactly once", total == want && dupes == 0, "%d rows, want %d; %d duplicated", total, want, dupes)
	}

	// Materialized views against a recomputation from the raw events.
	wantRevenue := map[string][2]int64{}
	wantPublished := map[string]int64{}
	for _, e := range lc.events {
		switch p := e.Payload.(type) {
		case schemas.CartCheckedOutV1:
			hour := e.Envelope.Time.UTC().Truncate(time.Hour).Format(time.DateTime)
			for _, l := range p.Lines {
				k := l.ProductID + "@" + hour
				v := wantRevenue[k]
				wantRevenue[k] = [2]int64{v[0] + l.Quantity, v[1] + l.Quantity*l.UnitPriceCents}
			}
		case schemas.ArticlePublishedV1:
			wantPublished[p.AuthorID+"@"+e.Envelope.Time.UTC().Format(time.DateOnly)]++
		}
	}
	gotRevenue := map[string][2]int64{}
	rows, err = ch.Conn().Query(ctx, "SELECT product_id, toString(hour), toInt64(sum(units)), toInt64(sum(revenue_cents)) FROM "+db+".revenue_per_product_hour GROUP BY product_id, hour")
	if err == nil {
		for rows.Next() {
			var product, hour string
			var units, revenue int64
			if err = rows.Scan(&product, &hour, &units, &revenue); err != nil {
				break
			}
			gotRevenue[product+"@"+hour] = [2]int64{units, revenue}
		}
		_ = rows.Close()
	}
	r.add("MV revenue_per_product_hour equals a recomputation", err == nil && maps.Equal(gotRevenue, wantRevenue),
		"%d product-hours, want %d %s", len(gotRevenue), len(wantRevenue), diffMaps(gotRevenue, wantRevenue, err))
	gotPublished := map[string]int64{}
	rows, err = ch.Conn().Query(ctx, "SELECT author_id, toString(day), toInt64(sum(published)) FROM "+db+".articles_per_author_day GROUP BY author_id, day")
	if err == nil {
		for rows.Next() {
			var author, day string
			var n int64
			if err = rows.Scan(&author, &day, &n); err != nil {
				break
			}
			gotPublished[author+"@"+day] = n
		}
		_ = rows.Close()
	}
	r.add("MV articles_per_author_day equals a recomputation", err == nil && maps.Equal(gotPublished, wantPublished),
		"%d author-days, want %d %s", len(gotPublished), len(wantPublished), diffMaps(gotPublished, wantPublished, err))
}

// replay computes the Postgres read models from the log, independently of
// the projection's SQL.
func replay(events []schemas.Record) map[string]string {
	type line struct{ qty, price int64 }
	type cart struct {
		status, customer string
		version          int64
		lines            map[string]line
	}
	type article struct {
		author, title string
		tags          []string
		version       int64
	}
	carts := map[string]*cart{}
	articles := map[string]*article{}
	rows := map[string]string{}
	for _, e := range events {
		id, v := e.Envelope.AggregateID, e.Envelope.AggregateVersion
		c := carts[id]
		switch p := e.Payload.(type) {
		case schemas.CartProductAddedV1:
			if c == nil {
				c = &cart{status: "open", lines: map[string]line{}}
				carts[id] = c
			}
			l := c.lines[p.ProductID]
			c.lines[p.ProductID] = line{l.qty + p.Quantity, p.UnitPriceCents}
			c.version = v
		case schemas.CartProductRemovedV1:
			l := c.lines[p.ProductID]
			if l.qty-p.Quantity <= 0 {
				delete(c.lines, p.ProductID)
			} else {
				c.lines[p.ProductID] = line{l.qty - p.Quantity, l.price}
			}
			c.version = v
		case schemas.CartCheckedOutV1:
			c.status, c.customer, c.version = "checked_out", p.CustomerID, v
			rows["order "+p.OrderID] = fmt.Sprintf("cart=%s customer=%s total=%d lines=%d", id, p.CustomerID, p.TotalCents, len(p.Lines))
		case schemas.ArticlePublishedV1:
			articles[id] = &article{author: p.AuthorID, title: p.Title, tags: p.Tags, version: v}
		case schemas.ArticleUpdatedV1:
			a := articles[id]
			if p.Title != nil {
				a.title = *p.Title
			}
			if p.Tags != nil {
				a.tags = *p.Tags
			}
			a.version = v
		}
	}
	for id, a := range articles {
		rows["article "+id] = fmt.Sprintf("author=%s title=%s tags=%v version=%d", a.author, a.title, a.tags, a.version)
	}
	for id, c := range carts {
		var total int64
		for product, l := range c.lines {
			total += l.qty * l.price
			rows["item "+id+"/"+product] = fmt.Sprintf("qty=%d price=%d", l.qty, l.price)
		}
		rows["cart "+id] = fmt.Sprintf("status=%s customer=%s total=%d version=%d", c.status, c.customer, total, c.version)
	}
	return rows
}

func (c *cluster) checkPostgres(ctx context.Context, r *report, pg *pgx.Conn, lc logContents) {
	want := replay(lc.events)
	got := map[string]string{}
	queries := []struct {
		sql    string
		render func(pgx.CollectableRow) (string, string, error)
	}{
		{"SELECT id, status, coalesce(customer_id, ''), coalesce(total_cents, 0), version FROM carts LEFT JOIN cart_totals ON cart_id = id", func(row pgx.CollectableRow) (string, string, error) {
			var id, status, customer string
			var total, version int64
			err := row.Scan(&id, &status, &customer, &total, &version)
			return "cart " + id, fmt.Sprintf("status=%s customer=%s total=%d version=%d", status, customer, total, version), err
		}},
		{"SELECT cart_id, product_id, quantity, unit_price_cents FROM cart_items", func(row pgx.CollectableRow) (string, string, error) {
			var cart, product string
			var qty, price int64
			err := row.Scan(&cart, &product, &qty, &price)
			return "item " + cart + "/" + product, fmt.Sprintf("qty=%d price=%d", qty, price), err
		}},
		{"SELECT id, cart_id, customer_id, total_cents, jsonb_array_length(lines) FROM orders", func(row pgx.CollectableRow) (string, string, error) {
			var id, cart, customer string
			var total, lines int64
			err := row.Scan(&id, &cart, &customer, &total, &lines)
			return "order " + id, fmt.Sprintf("cart=%s customer=%s total=%d lines=%d", cart, customer, total, lines), err
		}},
		{"SELECT id, author_id, title, tags, version FROM articles", func(row pgx.CollectableRow) (string, string, error) {
			var id, author, title string
			var tags []string
			var version int64
			err := row.Scan(&id, &author, &title, &tags, &version)
			return "article " + id, fmt.Sprintf("author=%s title=%s tags=%v version=%d", author, title, tags, version), err
		}},
	}
	for _, q := range queries {
		rows, err := pg.Query(ctx, q.sql)
		if err == nil {
			_, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (struct{}, error) {
				k, v, err := q.render(row)
				got[k] = v
				return struct{}{}, err
			})
		}
		if err != nil {
			r.add("Postgres read models equal a replay of the log", false, "%v", err)
			return
		}
	}
	r.add("Postgres read models equal a replay of the log", maps.Equal(got, want),
		"%d rows, replay has %d %s", len(got), len(want), diffMaps(got, want, nil))
}

func (c *cluster) checkPoison(t *testing.T, r *report, ch *clickhouse.Store, pg *pgx.Conn, brokers []string, dlq string, lc logContents) {
	records, _ := kappatest.ReadTopic(t, kafka.Connection{Brokers: brokers}, dlq)
	parked := map[string]map[string]int{} // key -> projection -> count
	for _, rec := range records {
		var projection string
		for _, h := range rec.Headers {
			if h.Key == "kappa_dlq_projection" {
				projection = string(h.Value)
			}
		}
		if parked[string(rec.Key)] == nil {
			parked[string(rec.Key)] = map[string]int{}
		}
		parked[string(rec.Key)][projection]++
	}
	var notParked, notPoison []string
	for key := range lc.poison {
		if parked[key]["clickhouse"] == 0 || parked[key]["postgres"] == 0 {
			notParked = append(notParked, key)
		}
	}
	for key := range parked {
		if !lc.poison[key] {
			notPoison = append(notPoison, key)
		}
	}
	r.add("every poison record is in the dead-letter topic, per projection", len(notParked) == 0,
		"%d poison records in the log; %d not parked by both projections %s", len(lc.poison), len(notParked), sample(notParked))
	r.add("the dead-letter topic holds nothing but poison", len(notPoison) == 0, "%d parked records are not poison %s", len(notPoison), sample(notPoison))
	keys := slices.Collect(maps.Keys(lc.poison))
	var inCH uint64
	err := ch.Conn().QueryRow(t.Context(), "SELECT count() FROM "+c.database+".events WHERE aggregate_id IN (?)", keys).Scan(&inCH)
	if err != nil {
		// 18.16 refuses an array bound to IN: compare in Go.
		inCH, err = countIn(t.Context(), ch, c.database, keys)
	}
	var inPG int
	if err == nil {
		err = pg.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM carts WHERE id = ANY($1)) + (SELECT count(*) FROM articles WHERE id = ANY($1))", keys).Scan(&inPG)
	}
	r.add("poison is nowhere else (ClickHouse, Postgres)", err == nil && inCH == 0 && inPG == 0, "%d rows in kappa.events, %d in Postgres %v", inCH, inPG, errOrEmpty(err))
}

func countIn(ctx context.Context, ch *clickhouse.Store, db string, keys []string) (uint64, error) {
	rows, err := ch.Conn().Query(ctx, "SELECT DISTINCT aggregate_id FROM "+db+".events WHERE aggregate_id LIKE 'poison-%'")
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	var n uint64
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return 0, err
		}
		if slices.Contains(keys, id) {
			n++
		}
	}
	return n, rows.Err()
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func sample(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	sort.Strings(ids)
	if len(ids) > 3 {
		ids = ids[:3]
	}
	return "(e.g. " + strings.Join(ids, ", ") + ")"
}

func diffMaps[V comparable](got, want map[string]V, err error) string {
	if err != nil {
		return err.Error()
	}
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			diffs = append(diffs, fmt.Sprintf("%s: got %v want %v", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, not in the replay", k, g))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 3 {
		diffs = append(diffs[:3], fmt.Sprintf("and %d more", len(diffs)-3))
	}
	if len(diffs) == 0 {
		return ""
	}
	return "(" + strings.Join(diffs, "; ") + ")"
}
