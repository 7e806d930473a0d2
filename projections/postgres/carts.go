package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kappa-cqrs/kappa/schemas"
)

// lineChange is the net effect of a run of cart events on one cart line,
// whatever quantity q (0 when absent) the line had before them:
// q becomes max(q + delta, floor), and a result of 0 or less removes the
// line. Adding n is {n, 0}; removing n is {-n, 0}, because a removal of
// at least the quantity empties the line. Such maps compose into the same
// form, so a whole batch folds into one change per line and is written
// with three set-based statements instead of one statement per event.
type lineChange struct {
	delta, floor int64
	// price is the unit price of the last add, nil if the run has none;
	// it is only used when the line survives the run.
	price *int64
}

func (c lineChange) then(next lineChange) lineChange {
	out := lineChange{delta: c.delta + next.delta, floor: max(c.floor+next.delta, next.floor), price: c.price}
	if next.price != nil {
		out.price = next.price
	}
	return out
}

func added(quantity, price int64) lineChange {
	return lineChange{delta: quantity, price: &price}
}

func removed(quantity int64) lineChange { return lineChange{delta: -quantity} }

type lineKey struct{ cart, product string }

// lineChanges folds events per line, keeping the order lines first appear in.
type lineChanges struct {
	order   []lineKey
	changes map[lineKey]lineChange
}

func (l *lineChanges) add(k lineKey, c lineChange) {
	if l.changes == nil {
		l.changes = map[lineKey]lineChange{}
	}
	prev, ok := l.changes[k]
	if !ok {
		l.order = append(l.order, k)
		l.changes[k] = c
		return
	}
	l.changes[k] = prev.then(c)
}

// lineColumns are line changes as the arrays a statement unnests.
type lineColumns struct {
	carts, products []string
	deltas, floors  []int64
	prices          []*int64
}

func (c *lineColumns) add(k lineKey, ch lineChange) {
	c.carts, c.products = append(c.carts, k.cart), append(c.products, k.product)
	c.deltas, c.floors, c.prices = append(c.deltas, ch.delta), append(c.floors, ch.floor), append(c.prices, ch.price)
}

// split separates the changes that only grow a line, which one upsert
// applies, from the rest, which may empty a line. With 0 <= floor <= delta,
// max(q + delta, floor) is q + delta for every quantity q >= 0.
func (l *lineChanges) split() (growing, other lineColumns) {
	for _, k := range l.order {
		c := l.changes[k]
		if c.delta > 0 && c.floor <= c.delta {
			growing.add(k, c)
		} else {
			other.add(k, c)
		}
	}
	return growing, other
}

// growLines applies growing line changes; the quantity column carries the
// delta.
const growLines = `INSERT INTO cart_items (cart_id, product_id, quantity, unit_price_cents)
	SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
	ON CONFLICT (cart_id, product_id) DO UPDATE
	SET quantity = cart_items.quantity + EXCLUDED.quantity, unit_price_cents = EXCLUDED.unit_price_cents`

// changeLines applies any line changes in one statement. The three parts
// touch disjoint lines (present and emptied, present and kept, absent)
// and all read the table as it was before the statement.
const changeLines = `WITH change AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
			AS t(cart_id, product_id, delta, floor, price)
	), emptied AS (
		DELETE FROM cart_items i USING change c
		WHERE i.cart_id = c.cart_id AND i.product_id = c.product_id AND greatest(i.quantity + c.delta, c.floor) <= 0
	), kept AS (
		UPDATE cart_items i SET quantity = greatest(i.quantity + c.delta, c.floor),
			unit_price_cents = coalesce(c.price, i.unit_price_cents)
		FROM change c
		WHERE i.cart_id = c.cart_id AND i.product_id = c.product_id AND greatest(i.quantity + c.delta, c.floor) > 0
	)
	INSERT INTO cart_items (cart_id, product_id, quantity, unit_price_cents)
	SELECT c.cart_id, c.product_id, greatest(c.delta, c.floor), c.price FROM change c
	WHERE greatest(c.delta, c.floor) > 0
		AND NOT EXISTS (SELECT 1 FROM cart_items i WHERE i.cart_id = c.cart_id AND i.product_id = c.product_id)`

// cartsTouched collects, per cart, what a batch does beyond its lines.
type cartsTouched struct {
	ids       []string // first-seen order
	versions  map[string]int64
	at        map[string]time.Time
	customers map[string]*string // set by a checkout
}

func (c *cartsTouched) touch(e schemas.Envelope) {
	if c.versions == nil {
		c.versions, c.at, c.customers = map[string]int64{}, map[string]time.Time{}, map[string]*string{}
	}
	id := schemas.KeyOf(e)
	if _, ok := c.versions[id]; !ok {
		c.ids = append(c.ids, id)
	}
	c.versions[id] = max(c.versions[id], e.AggregateVersion)
	if e.Time.After(c.at[id]) {
		c.at[id] = e.Time
	}
}

func (c *cartsTouched) checkedOut(id, customer string) { c.customers[id] = &customer }

// columns returns the carts as the arrays the statement unnests.
func (c *cartsTouched) columns() (versions []int64, at []time.Time, customers []*string) {
	versions, at, customers = make([]int64, len(c.ids)), make([]time.Time, len(c.ids)), make([]*string, len(c.ids))
	for i, id := range c.ids {
		versions[i], at[i], customers[i] = c.versions[id], c.at[id], c.customers[id]
	}
	return versions, at, customers
}

// isCartEvent reports the payloads that change a cart.
func isCartEvent(payload any) bool {
	switch payload.(type) {
	case schemas.CartProductAddedV1, schemas.CartProductRemovedV1, schemas.CartCheckedOutV1:
		return true
	}
	return false
}

// lockCarts creates the carts a batch touches that do not exist yet,
// locks them all and returns their versions before the batch (0 for the
// new ones). A concurrent writer of the same new cart waits on the
// unique index instead of failing.
func lockCarts(ctx context.Context, tx pgx.Tx, records []schemas.Record) (map[string]int64, error) {
	var ids []string
	var firstAt []time.Time
	seen := map[string]bool{}
	for _, r := range records {
		if id := schemas.KeyOf(r.Envelope); isCartEvent(r.Payload) && !seen[id] {
			seen[id] = true
			ids, firstAt = append(ids, id), append(firstAt, r.Envelope.Time)
		}
	}
	versions := make(map[string]int64, len(ids))
	if len(ids) == 0 {
		return versions, nil
	}
	q := &pgx.Batch{}
	q.Queue(`INSERT INTO carts (id, status, version, updated_at)
		SELECT id, 'open', 0, at FROM unnest($1::text[], $2::timestamptz[]) AS t(id, at)
		ON CONFLICT (id) DO NOTHING`, ids, firstAt)
	q.Queue(lockCartsQuery, ids).Query(func(rows pgx.Rows) error {
		var id string
		var v int64
		_, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error {
			versions[id] = v
			return nil
		})
		return err
	})
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
		return nil, fmt.Errorf("create and lock carts: %w", err)
	}
	return versions, nil
}

// lockCartsQuery locks the given carts in id order, so that concurrent
// writers never deadlock, and returns their versions.
const lockCartsQuery = `SELECT id, version FROM carts WHERE id = ANY($1) ORDER BY id FOR UPDATE`

// updateCarts sets what a batch changed on each cart it touched.
const updateCarts = `UPDATE carts k SET status = CASE WHEN t.customer_id IS NULL THEN k.status ELSE 'checked_out' END,
		customer_id = coalesce(t.customer_id, k.customer_id),
		version = greatest(k.version, t.version), updated_at = greatest(k.updated_at, t.at)
	FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[]) AS t(id, version, at, customer_id)
	WHERE k.id = t.id`
