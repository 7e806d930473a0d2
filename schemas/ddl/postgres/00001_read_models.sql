-- Read models of the Postgres projection. Every aggregate row carries the
-- version of the last event applied to it, which guards against applying an
-- older event over a newer one.

-- +goose Up
CREATE TABLE articles (
    id           text PRIMARY KEY,
    author_id    text        NOT NULL,
    title        text        NOT NULL,
    body         text        NOT NULL,
    tags         text[]      NOT NULL,
    version      bigint      NOT NULL,
    published_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE carts (
    id          text PRIMARY KEY,
    status      text        NOT NULL CHECK (status IN ('open', 'checked_out')),
    customer_id text,
    total_cents bigint      NOT NULL,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE cart_items (
    cart_id          text   NOT NULL,
    product_id       text   NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (cart_id, product_id)
);

CREATE TABLE orders (
    id          text PRIMARY KEY,
    cart_id     text        NOT NULL,
    customer_id text        NOT NULL,
    total_cents bigint      NOT NULL,
    lines       jsonb       NOT NULL,
    placed_at   timestamptz NOT NULL
);

CREATE TABLE command_outcomes (
    command_id       text PRIMARY KEY,
    command_type     text        NOT NULL,
    aggregate_id     text        NOT NULL,
    status           text        NOT NULL,
    rejection_code   text,
    rejection_detail text,
    events           jsonb       NOT NULL,
    command_partition integer    NOT NULL,
    command_offset   bigint      NOT NULL,
    decided_at       timestamptz NOT NULL
);

-- Where the projection resumes, written in the same transaction as the data.
-- commands_through is the highest command offset of the co-partitioned
-- commands topic whose outcome (and so all of whose events) is applied; it
-- is what read-your-writes waits on.
CREATE TABLE projection_positions (
    topic            text    NOT NULL,
    partition        integer NOT NULL,
    next_offset      bigint  NOT NULL,
    commands_through bigint  NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- +goose Down
DROP TABLE projection_positions;
DROP TABLE command_outcomes;
DROP TABLE orders;
DROP TABLE cart_items;
DROP TABLE carts;
DROP TABLE articles;
