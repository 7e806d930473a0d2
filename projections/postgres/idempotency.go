package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClaimIdempotencyKey binds key to commandID and requestHash unless it is
// bound already within window, and returns what it is bound to: a caller
// that gets another command id back compares the hashes to tell a retry of
// the same request from a key used for another. One statement claims, so
// that two instances racing for a key bind it once. The keys live here, in
// the database every ingest instance shares, so that a retry to any
// instance, before or after a restart, finds the first attempt.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, key string, requestHash []byte, commandID string, window time.Duration) (boundCommandID string, boundHash []byte, err error) {
	var bound string
	err = s.pool.QueryRow(ctx, `INSERT INTO idempotency_keys AS k (key, request_hash, command_id, created_at)
		VALUES ($1, $2, $3, now())
		ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, command_id = EXCLUDED.command_id,
			created_at = EXCLUDED.created_at
		WHERE k.created_at < now() - make_interval(secs => $4)
		RETURNING command_id`, key, requestHash, commandID, window.Seconds()).Scan(&bound)
	if err == nil {
		return bound, requestHash, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", nil, fmt.Errorf("claim idempotency key: %w", err)
	}
	var hash []byte
	if err := s.pool.QueryRow(ctx, `SELECT request_hash, command_id FROM idempotency_keys WHERE key = $1`, key).Scan(&hash, &bound); err != nil {
		return "", nil, fmt.Errorf("read idempotency key: %w", err)
	}
	return bound, hash, nil
}

// PurgeIdempotencyKeys deletes keys older than window and returns how many.
func (s *Store) PurgeIdempotencyKeys(ctx context.Context, window time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)`, window.Seconds())
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
