package postgres

import "github.com/jackc/pgx/v5/pgxpool"

// Hooks for the external tests of this package.

func (s *Store) Pool() *pgxpool.Pool { return s.pool }

const LockCartsQuery = lockCartsQuery

const UpdateCartsQuery = updateCarts
