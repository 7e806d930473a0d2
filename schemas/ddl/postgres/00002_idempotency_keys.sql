-- Idempotency keys of ingest: which command a key was first used for, and a
-- hash of that request, so that a retry maps to the same command id and a
-- reuse with another body is refused. Shared by every ingest instance.

-- +goose Up
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash bytea       NOT NULL,
    command_id   text        NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
