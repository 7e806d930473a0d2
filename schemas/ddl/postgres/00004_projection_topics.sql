-- The id of each topic the projection was built from. Positions in
-- projection_positions only mean something in that topic: a topic deleted
-- and created under the same name starts its offsets again, and resuming
-- there would skip its records. The consumer compares ids on every
-- assignment and refuses to resume on another topic.

-- +goose Up
CREATE TABLE projection_topics (
    topic    text PRIMARY KEY,
    topic_id text        NOT NULL,
    bound_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE projection_topics;
