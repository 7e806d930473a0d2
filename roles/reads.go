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
	// topic is the events topic whose projection ?position= waits on.
	topic string
}

// positionPoll is how often a ?position= wait looks at the projection.
const positionPoll = 10 * time.Millisecond

func (r postgresReads) Outcome(ctx context.Context, commandID string) (schemas.Outcome, bool, error) {
	o, err := r.store.Outcome(ctx, commandID)
	return o, err == nil, notFound(err)
}

func (r postgresReads) ReadModel(ctx context.Context, kind, id string) (any, bool, error) {
	var (
		v   any
		err error
	)
	switch kind {
	case "articles":
		v, err = r.store.Article(ctx, id)
	case "carts":
		v, err = r.store.Cart(ctx, id)
	case "orders":
		v, err = r.store.Order(ctx, id)
	default:
		return nil, false, fmt.Errorf("no read model %q", kind)
	}
	return v, err == nil, notFound(err)
}

func (r postgresReads) WaitApplied(ctx context.Context, pos schemas.Position) (bool, error) {
	err := r.store.WaitApplied(ctx, r.topic, pos, positionPoll)
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
