package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kappa-cqrs/kappa/auth"
)

// CreateAPIKey stores a new key.
func (s *Store) CreateAPIKey(ctx context.Context, k auth.StoredKey) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, tenant, name, scopes, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		k.ID, k.Tenant, k.Name, k.Scopes, k.SecretHash, k.CreatedAt)
	if err != nil {
		return fmt.Errorf("store API key %s: %w", k.ID, err)
	}
	return nil
}

// APIKey returns a key by id (the store is an auth.KeyStore); found is
// false if there is none.
func (s *Store) APIKey(ctx context.Context, id string) (k auth.StoredKey, found bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT id, tenant, name, scopes, secret_hash, created_at, revoked_at FROM api_keys WHERE id = $1`, id).
		Scan(&k.ID, &k.Tenant, &k.Name, &k.Scopes, &k.SecretHash, &k.CreatedAt, &k.RevokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.StoredKey{}, false, nil
	}
	if err != nil {
		return auth.StoredKey{}, false, fmt.Errorf("read API key %s: %w", id, err)
	}
	return k, true, nil
}

// ListAPIKeys returns every key, the newest first, without secrets.
func (s *Store) ListAPIKeys(ctx context.Context) ([]auth.StoredKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, tenant, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (auth.StoredKey, error) {
		var k auth.StoredKey
		err := row.Scan(&k.ID, &k.Tenant, &k.Name, &k.Scopes, &k.CreatedAt, &k.RevokedAt)
		return k, err
	})
}

// RevokeAPIKey marks a key revoked; found is false if there is no such
// key. Revoking twice keeps the first time.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (found bool, err error) {
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, id)
	if err != nil {
		return false, fmt.Errorf("revoke API key %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}
