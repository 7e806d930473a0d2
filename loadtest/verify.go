package loadtest

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kappa-cqrs/kappa/projections/clickhouse"
)

// verify checks that the stores hold exactly what was acknowledged: one
// outcome per command, each event once in ClickHouse, the same events per
// type in both stores, the same money, the same state for a sample of
// carts, and no trace of refused commands. Only this run's aggregates
// (under prefix) are looked at.
func verify(ctx context.Context, cfg Config, prefix string, rec *recorder) []Check {
	var checks []Check
	add := func(name string, ok bool, format string, args ...any) {
		checks = append(checks, Check{Name: name, OK: ok, Found: fmt.Sprintf(format, args...)})
	}
	pg, err := pgx.Connect(ctx, cfg.PostgresURL)
	if err != nil {
		add("connect to Postgres", false, "%v", err)
		return checks
	}
	defer func() { _ = pg.Close(context.WithoutCancel(ctx)) }()
	if _, err := pg.Exec(ctx, "SET search_path = "+pgx.Identifier{cfg.PostgresSchema}.Sanitize()); err != nil {
		add("connect to Postgres", false, "%v", err)
		return checks
	}
	ch, err := clickhouse.Open(ctx, clickhouse.Config{Addr: strings.Split(cfg.ClickHouseAddr, ","), Database: cfg.ClickHouseDatabase})
	if err != nil {
		add("connect to ClickHouse", false, "%v", err)
		return checks
	}
	defer func() { _ = ch.Close() }()
	like := prefix + "%"
	db := cfg.ClickHouseDatabase

	rec.mu.Lock()
	acked := rec.acked
	rec.mu.Unlock()
	var outcomes, distinct, events int64
	err = pg.QueryRow(ctx, `SELECT count(*), count(DISTINCT command_id), coalesce(sum(jsonb_array_length(events)), 0)
		FROM command_outcomes WHERE aggregate_id LIKE $1`, like).Scan(&outcomes, &distinct, &events)
	add("one outcome per acknowledged command (Postgres)", err == nil && outcomes == acked && distinct == acked,
		"%d acknowledged, %d outcomes, %d distinct %v", acked, outcomes, distinct, errText(err))

	var chEvents, chDistinct uint64
	err = ch.Conn().QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM "+db+".events WHERE aggregate_id LIKE ?", like).Scan(&chEvents, &chDistinct)
	add("each event exactly once in kappa.events", err == nil && int64(chEvents) == events && chDistinct == chEvents,
		"outcomes name %d events; kappa.events has %d rows, %d distinct %v", events, chEvents, chDistinct, errText(err))

	pgTypes := map[string]int64{}
	rows, err := pg.Query(ctx, `SELECT e->>'type', count(*) FROM command_outcomes, jsonb_array_elements(events) e
		WHERE aggregate_id LIKE $1 GROUP BY 1`, like)
	if err == nil {
		for rows.Next() {
			var t string
			var n int64
			if err = rows.Scan(&t, &n); err != nil {
				break
			}
			pgTypes[t] = n
		}
		rows.Close()
	}
	chTypes := map[string]int64{}
	if err == nil {
		chRows, qerr := ch.Conn().Query(ctx, "SELECT event_type, count() FROM "+db+".events WHERE aggregate_id LIKE ? GROUP BY event_type", like)
		err = qerr
		if err == nil {
			for chRows.Next() {
				var t string
				var n uint64
				if err = chRows.Scan(&t, &n); err != nil {
					break
				}
				chTypes[t] = int64(n)
			}
			_ = chRows.Close()
		}
	}
	add("events per type agree (outcomes vs kappa.events)", err == nil && maps.Equal(pgTypes, chTypes), "postgres %v, clickhouse %v %v", pgTypes, chTypes, errText(err))

	var pgMoney int64
	var chMoney int64
	err = pg.QueryRow(ctx, "SELECT coalesce(sum(total_cents), 0) FROM orders WHERE id LIKE $1", like).Scan(&pgMoney)
	if err == nil {
		err = ch.Conn().QueryRow(ctx, "SELECT toInt64(sum(revenue_cents)) FROM "+db+".order_lines WHERE order_id LIKE ?", like).Scan(&chMoney)
	}
	add("money agrees (orders total vs order lines revenue)", err == nil && pgMoney == chMoney, "postgres %d cents, clickhouse %d cents %v", pgMoney, chMoney, errText(err))

	var zeroLines uint64
	err = ch.Conn().QueryRow(ctx, "SELECT count() FROM "+db+".cart_lines WHERE cart_id LIKE ? AND quantity_delta = 0", like).Scan(&zeroLines)
	add("refused commands left no trace", err == nil && zeroLines == 0, "%d cart lines with quantity 0 %v", zeroLines, errText(err))

	checks = append(checks, sampleCarts(ctx, pg, ch, db, like), sampleArticles(ctx, pg, ch, db, like))
	return checks
}

// sampleCarts compares how many carts each store holds, and 25 of them:
// Postgres's version and items against the events and cart lines in
// ClickHouse. A run without cart events passes when neither store has one.
func sampleCarts(ctx context.Context, pg *pgx.Conn, ch *clickhouse.Store, db, like string) Check {
	return sampleAggregates(ctx, pg, ch, db, like, "carts", "cart.%", func(id string) (map[string]int64, map[string]int64, error) {
		pgItems, err := collectCounts(pg.Query(ctx, "SELECT product_id, quantity FROM cart_items WHERE cart_id = $1", id))
		if err != nil {
			return nil, nil, err
		}
		lines, err := ch.Conn().Query(ctx, "SELECT product_id, toInt64(sum(quantity_delta)) AS q FROM "+db+".cart_lines WHERE cart_id = ? GROUP BY product_id HAVING q > 0", id)
		if err != nil {
			return nil, nil, err
		}
		defer func() { _ = lines.Close() }()
		chItems := map[string]int64{}
		for lines.Next() {
			var p string
			var q int64
			if err := lines.Scan(&p, &q); err != nil {
				return nil, nil, err
			}
			chItems[p] = q
		}
		return pgItems, chItems, lines.Err()
	})
}

// sampleArticles does the same for articles, by version.
func sampleArticles(ctx context.Context, pg *pgx.Conn, ch *clickhouse.Store, db, like string) Check {
	return sampleAggregates(ctx, pg, ch, db, like, "articles", "article.%", nil)
}

// sampleAggregates checks that Postgres's table holds as many aggregates
// as ClickHouse has aggregates with events of eventTypes, and that for 25
// of them Postgres's version is ClickHouse's event count and, with
// contents, that their contents agree.
func sampleAggregates(ctx context.Context, pg *pgx.Conn, ch *clickhouse.Store, db, like, table, eventTypes string,
	contents func(id string) (pgSide, chSide map[string]int64, err error)) Check {
	c := Check{Name: fmt.Sprintf("per-%s state agrees for a sample of 25 %s", strings.TrimSuffix(table, "s"), table)}
	var pgCount int64
	var chCount uint64
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id LIKE $1", like).Scan(&pgCount); err != nil {
		c.Found = err.Error()
		return c
	}
	if err := ch.Conn().QueryRow(ctx, "SELECT uniqExact(aggregate_id) FROM "+db+".events WHERE aggregate_id LIKE ? AND event_type LIKE ?", like, eventTypes).Scan(&chCount); err != nil {
		c.Found = err.Error()
		return c
	}
	versions, err := collectCounts(pg.Query(ctx, "SELECT id, version FROM "+table+" WHERE id LIKE $1 ORDER BY md5(id) LIMIT 25", like))
	if err != nil {
		c.Found = err.Error()
		return c
	}
	var diffs []string
	for id, v := range versions {
		var n uint64
		if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM "+db+".events WHERE aggregate_id = ?", id).Scan(&n); err != nil {
			c.Found = err.Error()
			return c
		}
		var pgSide, chSide map[string]int64
		if contents != nil {
			if pgSide, chSide, err = contents(id); err != nil {
				c.Found = err.Error()
				return c
			}
		}
		switch {
		case int64(n) != v && contents == nil:
			diffs = append(diffs, fmt.Sprintf("%s: postgres v%d, clickhouse %d events", id, v, n))
		case int64(n) != v || !maps.Equal(pgSide, chSide):
			diffs = append(diffs, fmt.Sprintf("%s: postgres v%d %v, clickhouse %d events %v", id, v, pgSide, n, chSide))
		}
	}
	c.OK = pgCount == int64(chCount) && len(diffs) == 0
	c.Found = fmt.Sprintf("postgres holds %d, clickhouse has events of %d; %d compared, %d differ %s",
		pgCount, chCount, len(versions), len(diffs), strings.Join(diffs[:min(2, len(diffs))], "; "))
	return c
}

// collectCounts reads rows of (text, bigint) into a map.
func collectCounts(rows pgx.Rows, err error) (map[string]int64, error) {
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	var k string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		out[k] = v
		return nil
	})
	return out, err
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}
