-- The id of each topic the projection was built from: the partitions and
-- offsets every table carries only mean something in that topic. A topic
-- deleted and created under the same name starts its offsets again; the
-- consumer compares ids on every assignment and refuses to resume on
-- another topic. The first row written for a topic holds.

CREATE TABLE IF NOT EXISTS {{.DB}}.projection_topics (
    topic    String,
    topic_id String,
    bound_at {{.Time}}
) ENGINE = MergeTree()
ORDER BY topic
;
