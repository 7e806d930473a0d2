package postgres_test

import (
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
)

func TestClaimIdempotencyKey(t *testing.T) {
	s := open(t, kappatest.Postgres(t))
	ctx := t.Context()
	hash, other := []byte("request-a"), []byte("request-b")

	type binding struct {
		id   string
		hash string
	}
	for _, step := range []struct {
		name   string
		hash   []byte
		id     string
		window time.Duration
		want   binding
	}{
		{"first claim binds", hash, "cmd-1", time.Hour, binding{"cmd-1", "request-a"}},
		{"a retry finds the first binding", hash, "cmd-2", time.Hour, binding{"cmd-1", "request-a"}},
		{"another request finds it too", other, "cmd-3", time.Hour, binding{"cmd-1", "request-a"}},
		// Outside the window the key is free again, for any request.
		{"after the window it binds anew", other, "cmd-4", time.Nanosecond, binding{"cmd-4", "request-b"}},
	} {
		id, h, err := s.ClaimIdempotencyKey(ctx, "key-1", step.hash, step.id, step.window)
		if err != nil || (binding{id, string(h)}) != step.want {
			t.Fatalf("%s: bound to %s with hash %q, %v; want %+v", step.name, id, h, err, step.want)
		}
	}
	if n, err := s.PurgeIdempotencyKeys(ctx, time.Nanosecond); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v; want 1 key", n, err)
	}
}
