package kappatest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/auth"
)

// Keys is an auth.KeyStore in memory, for tests of the real auth.Keys.
type Keys struct {
	mu   sync.Mutex
	keys map[string]auth.StoredKey
	hits int
}

// NewKeys returns an empty key store.
func NewKeys() *Keys { return &Keys{keys: map[string]auth.StoredKey{}} }

// APIKey implements auth.KeyStore.
func (k *Keys) APIKey(_ context.Context, id string) (auth.StoredKey, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hits++
	key, ok := k.keys[id]
	return key, ok, nil
}

// Add makes a key of tenant with scopes and returns it and its id.
func (k *Keys) Add(t testing.TB, tenant string, scopes ...string) (credential, id string) {
	t.Helper()
	credential, id, hash, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[id] = auth.StoredKey{ID: id, Tenant: tenant, Scopes: scopes, SecretHash: hash, CreatedAt: time.Now()}
	return credential, id
}

// Revoke revokes the key with id.
func (k *Keys) Revoke(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := k.keys[id]
	now := time.Now()
	key.RevokedAt = &now
	k.keys[id] = key
}

// Hits is how often the store was asked for a key.
func (k *Keys) Hits() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.hits
}
