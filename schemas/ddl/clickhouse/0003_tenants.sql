-- Tenants. Every table leads its sort key with the tenant, so that one
-- tenant's queries read only that tenant's granules. ClickHouse cannot
-- change the leading columns of a table's sort key, so this migration is
-- applied by code (projections/clickhouse/tenants.go) rather than statement
-- by statement: each table below is created beside the old one under the
-- name <table>_tenants, the old rows are copied into it as the default
-- tenant's, and RENAME swaps the two. The views are created again last,
-- over the swapped tables. Same template parameters as 0001.

CREATE TABLE IF NOT EXISTS {{.DB}}.events_tenants (
    tenant            {{.Symbol}},
    event_id          String,
    event_type        {{.Symbol}},
    schema_version    UInt16,
    aggregate_id      String,
    aggregate_version UInt64,
    command_id        String,
    source            {{.Symbol}},
    occurred_at       {{.Time}},
    payload           String,
    topic             {{.Symbol}},
    `partition`       Int32,
    `offset`          Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, event_type, occurred_at, aggregate_id)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.cart_lines_tenants (
    tenant           {{.Symbol}},
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
ORDER BY (tenant, cart_id, occurred_at)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.orders_tenants (
    tenant      {{.Symbol}},
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
ORDER BY (tenant, placed_at, order_id)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.order_lines_tenants (
    tenant           {{.Symbol}},
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
ORDER BY (tenant, product_id, placed_at)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.articles_tenants (
    tenant            {{.Symbol}},
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
ORDER BY (tenant, article_id, occurred_at)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.revenue_per_product_hour_tenants (
    tenant        {{.Symbol}},
    product_id    String,
    hour          DateTime('UTC'),
    units         Int64,
    revenue_cents Int64,
    order_lines   UInt64
) ENGINE = SummingMergeTree()
ORDER BY (tenant, product_id, hour)
;
CREATE TABLE IF NOT EXISTS {{.DB}}.articles_per_author_day_tenants (
    tenant    {{.Symbol}},
    author_id String,
    day       Date,
    published UInt64
) ENGINE = SummingMergeTree()
ORDER BY (tenant, author_id, day)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {{.DB}}.revenue_per_product_hour_mv TO {{.DB}}.revenue_per_product_hour AS
SELECT
    tenant,
    product_id,
    toStartOfHour(placed_at) AS hour,
    quantity AS units,
    revenue_cents,
    toUInt64(1) AS order_lines
FROM {{.DB}}.order_lines
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {{.DB}}.articles_per_author_day_mv TO {{.DB}}.articles_per_author_day AS
SELECT
    tenant,
    author_id,
    toDate(occurred_at) AS day,
    toUInt64(1) AS published
FROM {{.DB}}.articles
WHERE event_type = 'article.published'
