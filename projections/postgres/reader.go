package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// ErrNotFound reports a lookup of an id the read model does not hold.
var ErrNotFound = errors.New("not found")

// ErrNotCaughtUp reports that the projection did not reach a position
// within the wait.
var ErrNotCaughtUp = errors.New("projection has not caught up with the position")

// Article is the read model of an article.
type Article struct {
	ID          string    `json:"id"`
	AuthorID    string    `json:"author_id"`
	Title       string    `json:"title"`
	Body        string    `json:"body"`
	Tags        []string  `json:"tags"`
	Version     int64     `json:"version"`
	PublishedAt time.Time `json:"published_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// CartItem is one line of a cart.
type CartItem struct {
	ProductID      string `json:"product_id"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// Cart is the read model of a cart.
type Cart struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	CustomerID *string    `json:"customer_id,omitempty"`
	Items      []CartItem `json:"items"`
	TotalCents int64      `json:"total_cents"`
	Version    int64      `json:"version"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

// Order is the read model of an order placed by a checkout.
type Order struct {
	ID         string              `json:"id"`
	CartID     string              `json:"cart_id"`
	CustomerID string              `json:"customer_id"`
	TotalCents int64               `json:"total_cents"`
	Lines      []schemas.OrderLine `json:"lines"`
	PlacedAt   time.Time           `json:"placed_at"`
}

// Article looks an article up by id.
func (s *Store) Article(ctx context.Context, id string) (Article, error) {
	a := Article{ID: id}
	err := s.pool.QueryRow(ctx, `SELECT author_id, title, body, tags, version, published_at, updated_at FROM articles WHERE id = $1`, id).
		Scan(&a.AuthorID, &a.Title, &a.Body, &a.Tags, &a.Version, &a.PublishedAt, &a.UpdatedAt)
	return a, lookupErr("article", id, err)
}

// Cart looks a cart and its items up by id.
func (s *Store) Cart(ctx context.Context, id string) (Cart, error) {
	c := Cart{ID: id, Items: []CartItem{}}
	err := s.pool.QueryRow(ctx, `SELECT status, customer_id, version, updated_at FROM carts WHERE id = $1`, id).
		Scan(&c.Status, &c.CustomerID, &c.Version, &c.UpdatedAt)
	if err := lookupErr("cart", id, err); err != nil {
		return c, err
	}
	rows, err := s.pool.Query(ctx, `SELECT product_id, quantity, unit_price_cents FROM cart_items WHERE cart_id = $1 ORDER BY product_id`, id)
	if err != nil {
		return c, fmt.Errorf("read items of cart %s: %w", id, err)
	}
	c.Items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (CartItem, error) {
		var it CartItem
		err := row.Scan(&it.ProductID, &it.Quantity, &it.UnitPriceCents)
		return it, err
	})
	for _, it := range c.Items {
		c.TotalCents += it.Quantity * it.UnitPriceCents
	}
	return c, err
}

// Order looks an order up by id.
func (s *Store) Order(ctx context.Context, id string) (Order, error) {
	o := Order{ID: id}
	var lines []byte
	err := s.pool.QueryRow(ctx, `SELECT cart_id, customer_id, total_cents, lines, placed_at FROM orders WHERE id = $1`, id).
		Scan(&o.CartID, &o.CustomerID, &o.TotalCents, &lines, &o.PlacedAt)
	if err := lookupErr("order", id, err); err != nil {
		return o, err
	}
	return o, json.Unmarshal(lines, &o.Lines)
}

// Outcome looks a command's outcome up by command id.
func (s *Store) Outcome(ctx context.Context, commandID string) (schemas.Outcome, error) {
	o := schemas.Outcome{CommandID: commandID}
	var code, detail *string
	var events []byte
	err := s.pool.QueryRow(ctx, `SELECT command_type, aggregate_id, status, rejection_code, rejection_detail, events,
			command_partition, command_offset FROM command_outcomes WHERE command_id = $1`, commandID).
		Scan(&o.CommandType, &o.AggregateID, &o.Status, &code, &detail, &events, &o.CommandPosition.Partition, &o.CommandPosition.Offset)
	if err := lookupErr("command outcome", commandID, err); err != nil {
		return o, err
	}
	if code != nil {
		o.Rejection = &schemas.Rejection{Code: *code}
		if detail != nil {
			o.Rejection.Detail = *detail
		}
	}
	return o, json.Unmarshal(events, &o.Events)
}

// PositionWatch answers waits for positions of one topic's projection
// with one reader per process: while anyone waits, it reads every
// partition's position once per interval and wakes the waits it
// satisfies; while nobody waits, it reads nothing. Postgres sees one query
// per interval per ingest, however many requests wait.
type PositionWatch struct {
	store    *Store
	topic    string
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	waits   map[*positionWait]struct{}
	running bool
}

type positionWait struct {
	pos     schemas.Position
	applied chan struct{}
}

// WatchPositions returns a PositionWatch of topic's projection that reads
// every interval while anyone waits.
func (s *Store) WatchPositions(topic string, interval time.Duration, log *slog.Logger) *PositionWatch {
	return &PositionWatch{store: s, topic: topic, interval: interval, log: log, waits: map[*positionWait]struct{}{}}
}

// WaitApplied waits until the projection has applied the outcome of the
// command at pos (and therefore all of its events), or ctx ends; then it
// returns ErrNotCaughtUp.
func (w *PositionWatch) WaitApplied(ctx context.Context, pos schemas.Position) error {
	wait := &positionWait{pos: pos, applied: make(chan struct{})}
	w.mu.Lock()
	w.waits[wait] = struct{}{}
	if !w.running {
		w.running = true
		go w.run()
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.waits, wait)
		w.mu.Unlock()
	}()
	select {
	case <-wait.applied:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %s", ErrNotCaughtUp, pos)
	}
}

// run reads the positions until no wait is left. A failed read leaves
// the waits waiting: they end as not caught up if Postgres stays away.
func (w *PositionWatch) run() {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	failing := false
	for {
		through, err := w.read()
		switch {
		case err != nil && !failing:
			w.log.Warn("read the projection's positions for waiting lookups", "topic", w.topic, "err", err)
		case err == nil && failing:
			w.log.Info("reading the projection's positions again", "topic", w.topic)
		}
		failing = err != nil
		w.mu.Lock()
		for wait := range w.waits {
			if o, ok := through[wait.pos.Partition]; ok && o >= wait.pos.Offset {
				close(wait.applied)
				delete(w.waits, wait)
			}
		}
		if len(w.waits) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		<-t.C
	}
}

// read returns the position each partition's projection has applied
// commands through.
func (w *PositionWatch) read() (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), max(time.Second, 10*w.interval))
	defer cancel()
	rows, err := w.store.pool.Query(ctx, `SELECT partition, commands_through FROM projection_positions WHERE topic = $1`, w.topic)
	if err != nil {
		return nil, err
	}
	through := map[int32]int64{}
	var partition int32
	var offset int64
	_, err = pgx.ForEachRow(rows, []any{&partition, &offset}, func() error {
		through[partition] = offset
		return nil
	})
	return through, err
}

func lookupErr(kind, id string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s %s: %w", kind, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read %s %s: %w", kind, id, err)
	}
	return nil
}
