"""Runs Kappa's ClickHouse DDL, rendered for a current server, in chdb
(current ClickHouse in-process): the tables of an earlier Kappa, rows
written into them, then migration 0003's steps. It checks that the earlier
rows became the default tenant's, that rows inserted the way the projection
inserts them, through a writer's gate, reach the table and the
materialized-view aggregates per tenant, and that a dropped gate refuses
inserts.

Usage: python chdb_ddl.py STATEMENTS_JSON DATABASE
STATEMENTS_JSON holds {"ddl_before", "ddl_upgrade", "create_gates",
"drop_gates", "order_lines_gate"}.
Prints one line per check; exits non-zero on the first failure.
"""
import json
import sys
import tempfile

from chdb import session


def main() -> int:
    spec = json.load(open(sys.argv[1]))
    db = sys.argv[2]
    with tempfile.TemporaryDirectory() as path:
        s = session.Session(path)
        s.query(f"CREATE DATABASE IF NOT EXISTS {db}")
        for stmt in spec["ddl_before"]:
            s.query(stmt)
        s.query(
            f"INSERT INTO {db}.order_lines (event_id, order_id, customer_id, product_id, quantity, unit_price_cents, "
            "revenue_cents, placed_at, `partition`, `offset`) VALUES "
            "('e0', 'o0', 'c0', 'p1', 4, 100, 400, '2026-11-22 10:05:00.000', 0, 1)")
        s.query(
            f"INSERT INTO {db}.events (event_id, event_type, schema_version, aggregate_id, aggregate_version, command_id, "
            "tenant, source, occurred_at, payload, topic, `partition`, `offset`) VALUES "
            "('e0', 'cart.checked_out', 1, 'o0', 2, 'cmd-0', '', 'kappa/processor', '2026-11-22 10:05:00.000', '{}', 'kappa.events', 0, 1)")
        for stmt in spec["ddl_upgrade"]:
            s.query(stmt)
        keys = s.query(
            f"SELECT name, sorting_key FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree' "
            "AND name NOT IN ('schema_migrations', 'projection_topics') ORDER BY name", "CSV").bytes().decode().strip()
        print("sort keys", keys.replace("\n", "; "))
        if any(not line.split(",", 1)[1].startswith('"tenant,') for line in keys.splitlines()) or len(keys.splitlines()) != 7:
            print("FAIL: a table is not led by the tenant")
            return 1
        earlier = s.query(
            f"SELECT (SELECT groupArray(tenant) FROM {db}.order_lines), (SELECT groupArray(tenant) FROM {db}.events)",
            "CSV").bytes().decode().strip()
        print("tenants of the earlier rows", earlier)
        if earlier != '"[\'default\']","[\'default\']"':
            print("FAIL: the earlier rows are not the default tenant's")
            return 1
        print("version", s.query("SELECT version()", "CSV").bytes().decode().strip())
        types = s.query(
            f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'events' "
            "AND name IN ('occurred_at', 'event_type') ORDER BY name", "CSV").bytes().decode()
        print("events columns", types.replace("\n", " ").strip())
        if "DateTime64(3, 'UTC')" not in types or "LowCardinality(String)" not in types:
            print("FAIL: modern column types not applied")
            return 1
        for stmt in spec["create_gates"]:
            s.query(stmt)
        gate = spec["order_lines_gate"]
        s.query(
            f"INSERT INTO {db}.{gate} (tenant, event_id, order_id, customer_id, product_id, quantity, unit_price_cents, "
            "revenue_cents, placed_at, `partition`, `offset`) VALUES "
            "('acme', 'e1', 'o1', 'c1', 'p1', 2, 150, 300, '2026-11-22 10:15:00.123', 0, 7), "
            "('acme', 'e2', 'o2', 'c2', 'p1', 1, 150, 150, '2026-11-22 10:45:00.000', 1, 3)")
        lines = s.query(f"SELECT count() FROM {db}.order_lines WHERE tenant = 'acme'", "CSV").bytes().decode().strip()
        print("order_lines through the gate", lines)
        if lines != "2":
            print("FAIL: rows inserted through the gate did not reach order_lines")
            return 1
        s.query(
            f"INSERT INTO {db}.articles (tenant, event_id, event_type, article_id, author_id, title, tags, tags_changed, "
            "article_version, occurred_at, `partition`, `offset`) VALUES "
            "('acme', 'e3', 'article.published', 'a1', 'u1', 'T', ['x'], 1, 1, '2026-11-22 10:00:00', 2, 0), "
            "('acme', 'e4', 'article.updated', 'a1', '', NULL, [], 0, 2, '2026-11-22 11:00:00', 2, 1)")
        revenue = s.query(
            f"SELECT tenant, product_id, toString(hour), sum(units), sum(revenue_cents) FROM {db}.revenue_per_product_hour "
            "GROUP BY tenant, product_id, hour ORDER BY tenant", "CSV").bytes().decode().strip()
        print("revenue", revenue.replace("\n", "; "))
        if revenue != '"acme","p1","2026-11-22 10:00:00",3,450\n"default","p1","2026-11-22 10:00:00",4,400':
            print("FAIL: revenue_per_product_hour")
            return 1
        published = s.query(
            f"SELECT tenant, author_id, sum(published) FROM {db}.articles_per_author_day GROUP BY tenant, author_id",
            "CSV").bytes().decode().strip()
        print("published", published)
        if published != '"acme","u1",1':
            print("FAIL: articles_per_author_day")
            return 1
        for stmt in spec["drop_gates"]:
            s.query(stmt)
        try:
            s.query(
                f"INSERT INTO {db}.{gate} (tenant, event_id, order_id, customer_id, product_id, quantity, unit_price_cents, "
                "revenue_cents, placed_at, `partition`, `offset`) VALUES "
                "('acme', 'e9', 'o9', 'c9', 'p9', 1, 1, 1, '2026-11-22 12:00:00', 0, 8)")
        except Exception as e:  # chdb raises its own error type
            if "UNKNOWN_TABLE" not in str(e):
                print("FAIL: a dropped gate refused an insert for another reason:", e)
                return 1
            print("dropped gate refuses inserts: UNKNOWN_TABLE")
        else:
            print("FAIL: a dropped gate accepted an insert")
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
