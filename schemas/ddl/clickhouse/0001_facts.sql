-- ClickHouse tables of the ClickHouse projection, rendered as a Go template:
-- .DB is the database, .Modern is true on servers that have DateTime64 and
-- LowCardinality (20.1 and later); 18.16 gets second-precision DateTime and
-- plain String. Statements are separated by a line holding only ';'.
--
-- Every table carries the Kafka partition and offset of the event it came
-- from: the projection resumes from max(offset) of the events table and
-- skips rows a typed table already holds, so nothing is written twice.

CREATE TABLE IF NOT EXISTS {{.DB}}.events (
    event_id          String,
    event_type        {{.Symbol}},
    schema_version    UInt16,
    aggregate_id      String,
    aggregate_version UInt64,
    command_id        String,
    tenant            {{.Symbol}},
    source            {{.Symbol}},
    occurred_at       {{.Time}},
    payload           String,
    topic             {{.Symbol}},
    `partition`       Int32,
    `offset`          Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_type, occurred_at, aggregate_id)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.cart_lines (
    event_id         String,
    event_type       {{.Symbol}},
    cart_id          String,
    product_id       String,
    quantity_delta   Int64,
    unit_price_cents Int64,
    cart_version     UInt64,
    occurred_at      {{.Time}},
    `partition`      Int32,
    `offset`         Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (cart_id, occurred_at)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.orders (
    event_id    String,
    order_id    String,
    cart_id     String,
    customer_id String,
    total_cents Int64,
    line_count  UInt32,
    item_count  Int64,
    placed_at   {{.Time}},
    `partition` Int32,
    `offset`    Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(placed_at)
ORDER BY (placed_at, order_id)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.order_lines (
    event_id         String,
    order_id         String,
    customer_id      String,
    product_id       String,
    quantity         Int64,
    unit_price_cents Int64,
    revenue_cents    Int64,
    placed_at        {{.Time}},
    `partition`      Int32,
    `offset`         Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(placed_at)
ORDER BY (product_id, placed_at)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.articles (
    event_id          String,
    event_type        {{.Symbol}},
    article_id        String,
    author_id         String,
    title             Nullable(String),
    tags              Array(String),
    tags_changed      UInt8,
    article_version   UInt64,
    occurred_at       {{.Time}},
    `partition`       Int32,
    `offset`          Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (article_id, occurred_at)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.revenue_per_product_hour (
    product_id    String,
    hour          DateTime('UTC'),
    units         Int64,
    revenue_cents Int64,
    order_lines   UInt64
) ENGINE = SummingMergeTree()
ORDER BY (product_id, hour)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {{.DB}}.revenue_per_product_hour_mv TO {{.DB}}.revenue_per_product_hour AS
SELECT
    product_id,
    toStartOfHour(placed_at) AS hour,
    quantity AS units,
    revenue_cents,
    toUInt64(1) AS order_lines
FROM {{.DB}}.order_lines
;
CREATE TABLE IF NOT EXISTS {{.DB}}.articles_per_author_day (
    author_id String,
    day       Date,
    published UInt64
) ENGINE = SummingMergeTree()
ORDER BY (author_id, day)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {{.DB}}.articles_per_author_day_mv TO {{.DB}}.articles_per_author_day AS
SELECT
    author_id,
    toDate(occurred_at) AS day,
    toUInt64(1) AS published
FROM {{.DB}}.articles
WHERE event_type = 'article.published'
