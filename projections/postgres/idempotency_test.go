package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/postgres"
)

func TestClaimIdempotencyKey(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	ctx := t.Context()
	hash, other := []byte("request-a"), []byte("request-b")

	first, err := s.ClaimIdempotencyKey(ctx, "key-1", hash, "cmd-1", time.Hour)
	if err != nil || first != (postgres.Claim{CommandID: "cmd-1"}) {
		t.Fatalf("first claim = %+v, %v; want cmd-1, not replayed", first, err)
	}
	retry, err := s.ClaimIdempotencyKey(ctx, "key-1", hash, "cmd-2", time.Hour)
	if err != nil || retry != (postgres.Claim{CommandID: "cmd-1", Replayed: true}) {
		t.Fatalf("retry = %+v, %v; want cmd-1 replayed", retry, err)
	}
	if _, err := s.ClaimIdempotencyKey(ctx, "key-1", other, "cmd-3", time.Hour); !errors.Is(err, postgres.ErrIdempotencyKeyReused) {
		t.Fatalf("reuse with another request: %v, want ErrIdempotencyKeyReused", err)
	}
	// Outside the window the key is free again, for any request.
	expired, err := s.ClaimIdempotencyKey(ctx, "key-1", other, "cmd-4", time.Nanosecond)
	if err != nil || expired != (postgres.Claim{CommandID: "cmd-4"}) {
		t.Fatalf("claim after the window = %+v, %v; want cmd-4, not replayed", expired, err)
	}
	if n, err := s.PurgeIdempotencyKeys(ctx, time.Nanosecond); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v; want 1 key", n, err)
	}
}
