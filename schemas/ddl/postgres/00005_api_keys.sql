-- API keys that ingest accepts as bearer credentials: the id finds the key,
-- a SHA-256 of the secret proves it (the secret itself is shown once, when
-- the key is made, and stored nowhere). A revoked key keeps its row.

-- +goose Up
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant      text        NOT NULL,
    name        text        NOT NULL,
    scopes      text[]      NOT NULL,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- +goose Down
DROP TABLE api_keys;
