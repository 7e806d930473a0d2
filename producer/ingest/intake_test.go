package ingest_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// fakeBus acknowledges every command at 1:10, 1:11, ... and records them.
type fakeBus struct {
	mu        sync.Mutex
	published []ingest.Command
}

func (b *fakeBus) Publish(_ context.Context, cmds []ingest.Command, _ time.Duration) ([]ingest.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	res := make([]ingest.Result, len(cmds))
	for i, c := range cmds {
		res[i].Position = schemas.Position{Partition: 1, Offset: int64(10 + len(b.published))}
		b.published = append(b.published, c)
	}
	return res, nil
}

func (b *fakeBus) Ready(context.Context) error { return nil }

func (b *fakeBus) ids() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, c := range b.published {
		ids = append(ids, c.ID)
	}
	return ids
}

// memoryKeys binds keys as the Postgres store does, without a window.
type memoryKeys struct {
	bound map[string][2]string // key -> command id, request hash
	err   error
}

func (k *memoryKeys) ClaimIdempotencyKey(_ context.Context, key string, hash []byte, id string, _ time.Duration) (string, []byte, error) {
	if k.err != nil {
		return "", nil, k.err
	}
	if b, ok := k.bound[key]; ok {
		return b[0], []byte(b[1]), nil
	}
	k.bound[key] = [2]string{id, string(hash)}
	return id, hash, nil
}

type memoryOutcomes map[string]schemas.Outcome

func (m memoryOutcomes) Outcome(_ context.Context, _, id string) (schemas.Outcome, bool, error) {
	o, ok := m[id]
	return o, ok, nil
}

func command(t *testing.T, aggregate, key, product string) ingest.Command {
	t.Helper()
	qty, price := int64(1), int64(100)
	c, err := ingest.NewCommand(schemas.AddProductToCart, aggregate, "", key, schemas.AddProductV1{ProductID: product, Quantity: &qty, UnitPriceCents: &price})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newIntake(t *testing.T, keys ingest.Keys, outcomes ingest.Outcomes) (*ingest.Intake, *fakeBus) {
	t.Helper()
	bus := &fakeBus{}
	in, err := ingest.NewIntake(ingest.IntakeConfig{Bus: bus, Keys: keys, Outcomes: outcomes})
	if err != nil {
		t.Fatal(err)
	}
	return in, bus
}

func TestARetryIsTheFirstAttempt(t *testing.T) {
	keys := &memoryKeys{bound: map[string][2]string{}}
	outcomes := memoryOutcomes{}
	in, bus := newIntake(t, keys, outcomes)
	ctx := t.Context()

	first, err := in.Submit(ctx, command(t, "cart-1", "k1", "p1"), 0)
	if err != nil || first.Replayed || first.Recalled {
		t.Fatalf("first attempt: %+v, %v", first, err)
	}
	// Retried before it was decided: published again under the first id.
	retry, err := in.Submit(ctx, command(t, "cart-1", "k1", "p1"), 0)
	if err != nil || !retry.Replayed || retry.Recalled || retry.Command.ID != first.Command.ID {
		t.Fatalf("retry before the decision: %+v, %v; want the first id, published again", retry, err)
	}
	// Retried after: answered with the first outcome, not written.
	outcomes[first.Command.ID] = schemas.Outcome{CommandID: first.Command.ID, Status: schemas.StatusAccepted,
		CommandPosition: first.Position}
	again, err := in.Submit(ctx, command(t, "cart-1", "k1", "p1"), 0)
	if err != nil || !again.Replayed || !again.Recalled || again.Outcome == nil || again.Position != first.Position {
		t.Fatalf("retry after the decision: %+v, %v; want the first outcome", again, err)
	}
	if got, want := bus.ids(), []string{first.Command.ID, first.Command.ID}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
}

func TestAReusedKeyWritesNothing(t *testing.T) {
	keys := &memoryKeys{bound: map[string][2]string{}}
	in, bus := newIntake(t, keys, nil)
	ctx := t.Context()
	if _, err := in.Submit(ctx, command(t, "cart-1", "k1", "p1"), 0); err != nil {
		t.Fatal(err)
	}
	for name, cmd := range map[string]ingest.Command{
		"another payload":   command(t, "cart-1", "k1", "p2"),
		"another aggregate": command(t, "cart-2", "k1", "p1"),
	} {
		_, err := in.Submit(ctx, cmd, 0)
		var reused *ingest.KeyReusedError
		if !errors.As(err, &reused) || !errors.Is(err, ingest.ErrKeyReused) || !slices.Equal(reused.Indexes, []int{0}) {
			t.Errorf("%s: %v, want KeyReusedError for command 0", name, err)
		}
	}
	// In a batch, one reused key refuses the whole batch.
	_, err := in.SubmitBatch(ctx, []ingest.Command{command(t, "cart-3", "k3", "p1"), command(t, "cart-1", "k1", "p9")}, 0)
	var reused *ingest.KeyReusedError
	if !errors.As(err, &reused) || !slices.Equal(reused.Indexes, []int{1}) {
		t.Fatalf("batch with a reused key: %v, want KeyReusedError for command 1", err)
	}
	if n := len(bus.ids()); n != 1 {
		t.Fatalf("%d commands published, want only the first", n)
	}
}

func TestKeysThatCannotBeCheckedWriteNothing(t *testing.T) {
	for name, keys := range map[string]ingest.Keys{
		"no key store":  nil,
		"store failing": &memoryKeys{err: errors.New("connection refused")},
	} {
		in, bus := newIntake(t, keys, nil)
		if _, err := in.Submit(t.Context(), command(t, "cart-1", "k1", "p1"), 0); !errors.Is(err, ingest.ErrKeysUnavailable) {
			t.Errorf("%s: %v, want ErrKeysUnavailable", name, err)
		}
		if len(bus.ids()) != 0 {
			t.Errorf("%s: published", name)
		}
		// Commands without keys need no key store.
		if _, err := in.Submit(t.Context(), command(t, "cart-1", "", "p1"), 0); err != nil {
			t.Errorf("%s, no key: %v", name, err)
		}
	}
}

func TestNewCommandEncodesThePayloadOnce(t *testing.T) {
	c := command(t, "cart-1", "", "p1")
	if string(c.Data) != `{"product_id":"p1","quantity":1,"unit_price_cents":100}` || c.ID == "" {
		t.Fatalf("command %+v", c)
	}
	if c2 := command(t, "cart-1", "", "p1"); c2.ID == c.ID {
		t.Fatal("two commands got the same id")
	}
}
