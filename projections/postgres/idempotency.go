package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrIdempotencyKeyReused reports a key first used for a different request.
var ErrIdempotencyKeyReused = errors.New("idempotency key was used for a different request")

// Claim is the command an idempotency key stands for.
type Claim struct {
	CommandID string
	// Replayed is true when the key was already used, within the window,
	// for the same request: CommandID is then that request's command.
	Replayed bool
}

// ClaimIdempotencyKey binds key to commandID unless it is already bound,
// within window, in which case it returns the bound command if requestHash
// matches and ErrIdempotencyKeyReused if not. The keys live here, in the
// database every ingest instance shares, so that a retry to any instance,
// before or after a restart, finds the first attempt.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, key string, requestHash []byte, commandID string, window time.Duration) (Claim, error) {
	var bound string
	err := s.pool.QueryRow(ctx, `INSERT INTO idempotency_keys AS k (key, request_hash, command_id, created_at)
		VALUES ($1, $2, $3, now())
		ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, command_id = EXCLUDED.command_id,
			created_at = EXCLUDED.created_at
		WHERE k.created_at < now() - make_interval(secs => $4)
		RETURNING command_id`, key, requestHash, commandID, window.Seconds()).Scan(&bound)
	if err == nil {
		return Claim{CommandID: bound}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, fmt.Errorf("claim idempotency key: %w", err)
	}
	var hash []byte
	if err := s.pool.QueryRow(ctx, `SELECT request_hash, command_id FROM idempotency_keys WHERE key = $1`, key).Scan(&hash, &bound); err != nil {
		return Claim{}, fmt.Errorf("read idempotency key: %w", err)
	}
	if !bytes.Equal(hash, requestHash) {
		return Claim{}, ErrIdempotencyKeyReused
	}
	return Claim{CommandID: bound, Replayed: true}, nil
}

// PurgeIdempotencyKeys deletes keys older than window and returns how many.
func (s *Store) PurgeIdempotencyKeys(ctx context.Context, window time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)`, window.Seconds())
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
