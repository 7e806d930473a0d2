package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"time"
)

// API keys look like kappa_<id>_<secret>: the id finds the key, the secret
// proves it. Kappa stores the id and a SHA-256 of the secret; a secret of
// 256 random bits needs no slow hash, since nobody can guess it.
const keyPrefix = "kappa_"

// StoredKey is an API key as a KeyStore keeps it.
type StoredKey struct {
	ID         string
	Tenant     string
	Name       string
	Scopes     []string
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// KeyStore finds API keys by id; Kappa keeps them in Postgres.
type KeyStore interface {
	APIKey(ctx context.Context, id string) (key StoredKey, found bool, err error)
}

// NewKey makes a key: what to show its owner once, and what to store.
func NewKey() (credential string, id string, secretHash []byte, err error) {
	idBytes, secretBytes := make([]byte, 10), make([]byte, 32)
	if _, err := rand.Read(idBytes); err != nil {
		return "", "", nil, err
	}
	if _, err := rand.Read(secretBytes); err != nil {
		return "", "", nil, err
	}
	id = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(idBytes))
	secret := base64.RawURLEncoding.EncodeToString(secretBytes)
	sum := sha256.Sum256([]byte(secret))
	return keyPrefix + id + "_" + secret, id, sum[:], nil
}

// parseKey splits a credential into its id and secret.
func parseKey(credential string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(credential, keyPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && id != "" && secret != ""
}

// Keys authenticates API keys, remembering what the store said for
// CacheTTL, so that a busy API does not ask Postgres for every request and
// a revoked key still stops working within CacheTTL on every instance.
type Keys struct {
	store KeyStore
	ttl   time.Duration

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	key     StoredKey
	found   bool
	fetched time.Time
}

// NewKeys returns Keys over store; cacheTTL 0 means 2s.
func NewKeys(store KeyStore, cacheTTL time.Duration) *Keys {
	if cacheTTL == 0 {
		cacheTTL = 2 * time.Second
	}
	return &Keys{store: store, ttl: cacheTTL, cache: map[string]cachedKey{}}
}

// CacheTTL is how long a key's state is remembered.
func (k *Keys) CacheTTL() time.Duration { return k.ttl }

// Authenticate implements Authenticator.
func (k *Keys) Authenticate(ctx context.Context, credential string) (Principal, error) {
	id, secret, ok := parseKey(credential)
	if !ok {
		return Principal{}, unauthenticated("malformed API key")
	}
	key, found, err := k.lookup(ctx, id)
	if err != nil {
		return Principal{}, fmt.Errorf("look API key %s up: %w", id, err)
	}
	sum := sha256.Sum256([]byte(secret))
	if !found || subtle.ConstantTimeCompare(sum[:], key.SecretHash) != 1 {
		return Principal{}, unauthenticated("unknown API key")
	}
	if key.RevokedAt != nil {
		return Principal{}, unauthenticated("revoked API key")
	}
	return Principal{Tenant: key.Tenant, Scopes: key.Scopes, Subject: "apikey:" + key.ID}, nil
}

func (k *Keys) lookup(ctx context.Context, id string) (StoredKey, bool, error) {
	k.mu.Lock()
	c, ok := k.cache[id]
	k.mu.Unlock()
	if ok && time.Since(c.fetched) < k.ttl {
		return c.key, c.found, nil
	}
	key, found, err := k.store.APIKey(ctx, id)
	if err != nil {
		return StoredKey{}, false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.cache) > 100_000 {
		clear(k.cache) // ids a client made up do not fill memory
	}
	k.cache[id] = cachedKey{key: key, found: found, fetched: time.Now()}
	return key, found, nil
}
