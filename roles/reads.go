package roles

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/schemas"
)

// postgresReads serves the API's reads (api.Reads) and the intake's
// replays (ingest.Outcomes) from the Postgres projection: here, where the
// packages meet, its errors become the found and caught-up answers those
// packages ask for, so that neither imports a projection.
type postgresReads struct {
	store *postgres.Store
	// positions answers ?position= waits on the events topic's projection.
	positions *postgres.PositionWatch
}

// positionPoll is how often the positions are read while lookups wait:
// one query per ingest, however many wait.
const positionPoll = 10 * time.Millisecond

// Outcome returns the outcome of a command of tenant: one of another
// tenant is not found, exactly as a missing one. The outcome's aggregate
// id is the aggregate's key (schemas.AggregateKey), which names its tenant.
func (r postgresReads) Outcome(ctx context.Context, tenant, commandID string) (schemas.Outcome, bool, error) {
	o, err := r.store.Outcome(ctx, commandID)
	if err != nil {
		return schemas.Outcome{}, false, notFound(err)
	}
	owner, id := schemas.SplitAggregateKey(o.AggregateID)
	if !sameTenant(owner, tenant) {
		return schemas.Outcome{}, false, nil
	}
	o.AggregateID = id
	return o, true, nil
}

// ReadModel returns tenant's read model: rows are keyed by the aggregate's
// key, so another tenant's id is simply not found. The ids shown are the
// tenant's own, without the prefix.
func (r postgresReads) ReadModel(ctx context.Context, tenant, kind, id string) (any, int64, bool, error) {
	key := schemas.AggregateKey(tenant, id)
	var (
		v       any
		version int64
		err     error
	)
	switch kind {
	case "articles":
		var a postgres.Article
		a, err = r.store.Article(ctx, key)
		a.ID = id
		v, version = a, a.Version
	case "carts":
		var c postgres.Cart
		c, err = r.store.Cart(ctx, key)
		c.ID = id
		v, version = c, c.Version
	case "orders":
		var o postgres.Order
		o, err = r.store.Order(ctx, key)
		_, o.CartID = schemas.SplitAggregateKey(o.CartID)
		o.ID = id
		v = o
	default:
		return nil, 0, false, fmt.Errorf("no read model %q", kind)
	}
	if err != nil {
		return nil, 0, false, notFound(err)
	}
	return v, version, true, nil
}

// sameTenant compares tenants, the default one also written as "".
func sameTenant(a, b string) bool {
	return schemas.AggregateKey(a, "x") == schemas.AggregateKey(b, "x")
}

func (r postgresReads) WaitApplied(ctx context.Context, pos schemas.Position) (bool, error) {
	err := r.positions.WaitApplied(ctx, pos)
	if errors.Is(err, postgres.ErrNotCaughtUp) {
		return false, nil
	}
	return err == nil, err
}

func (r postgresReads) Ping(ctx context.Context) error { return r.store.Ping(ctx) }

// notFound turns the store's not-found into no error.
func notFound(err error) error {
	if errors.Is(err, postgres.ErrNotFound) {
		return nil
	}
	return err
}
