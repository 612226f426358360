"""Console benchmark: the read model and the first paint on a large database.

    .venv/bin/python bench/console_bench.py [--database-url URL] [--polls 50]

Without --database-url it starts a throw-away embedded PostgreSQL (pgserver) in a temp dir
and removes it afterwards. It seeds 1,000,000 synced entity rows (4 realms: customers,
items, estimates + lines, invoices + lines, with generate_series), 100,000 sync_runs and
10,000 errors, then measures:

- each poll's queries (db.readmodel.status_snapshot on one connection, as the console does):
  median / p95 / max over --polls polls; budget 50 ms in total;
- EXPLAIN (ANALYZE) of every read-model query: no sequential scan of an entity table, of
  sync_runs or of errors;
- the console's first full paint: headless `App.run_test(size=(80, 24))` from start until
  the first poll is rendered; budget 1 s.
Prints the figures and the machine; exits 1 if a budget or the plan check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.connection import Database, connect  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.readmodel import READ_MODEL_QUERIES, status_snapshot  # noqa: E402

REALMS = 4
PER_REALM = {  # 250,000 entity rows per realm, 1,000,000 in all
    "customers": 40_000, "items": 2_500, "estimates": 20_000, "estimate_line_items": 40_000,
    "invoices": 50_000, "invoice_line_items": 97_500,
}
SYNC_RUNS = 100_000
ERRORS = 10_000
ENTITY_TABLES = tuple(PER_REALM)
BIG_TABLES = ENTITY_TABLES + ("sync_runs", "errors")
POLL_BUDGET_MS = 50.0
PAINT_BUDGET_S = 1.0

SEED_SQL = [
    """INSERT INTO quickbooks.companies (id, name, environment)
       SELECT '91303570000' || r, 'Bench Company ' || r, 'production' FROM generate_series(1, {realms}) r""",
    """INSERT INTO quickbooks.tokens (realm_id, company_id, access_token, refresh_token, expires_at,
           refresh_token_expires_at, refresh_token_hard_expires_at, last_refreshed_at)
       SELECT '91303570000' || r, '91303570000' || r, 'bench-access-' || r, 'bench-refresh-' || r,
              now() + interval '50 minutes', now() + interval '99 days', now() + interval '4 years',
              now() - interval '10 minutes' FROM generate_series(1, {realms}) r""",
    """INSERT INTO quickbooks.customers (realm_id, id, display_name, email, active, balance, currency, sync_token,
           qbo_created_at, qbo_updated_at, raw)
       SELECT '91303570000' || r, g::text, 'Customer ' || g, 'c' || g || '@example.com', g % 10 <> 0,
              (g % 1000)::numeric, 'USD', '0', now() - interval '300 days', now() - (g || ' seconds')::interval,
              jsonb_build_object('Id', g::text, 'DisplayName', 'Customer ' || g)
         FROM generate_series(1, {realms}) r, generate_series(1, {customers}) g""",
    """INSERT INTO quickbooks.items (realm_id, id, name, type, active, unit_price, sync_token, raw)
       SELECT '91303570000' || r, g::text, 'Item ' || g, 'Service', true, (g % 200)::numeric, '0',
              jsonb_build_object('Id', g::text)
         FROM generate_series(1, {realms}) r, generate_series(1, {items}) g""",
    """INSERT INTO quickbooks.estimates (realm_id, id, doc_number, txn_date, customer_id, total_amt, sync_token, raw)
       SELECT '91303570000' || r, g::text, 'E' || g, current_date - (g % 700), (g % {customers} + 1)::text,
              (g % 5000)::numeric, '0', jsonb_build_object('Id', g::text)
         FROM generate_series(1, {realms}) r, generate_series(1, {estimates}) g""",
    """INSERT INTO quickbooks.estimate_line_items (realm_id, estimate_id, position, line_id, amount, item_id, qty)
       SELECT '91303570000' || r, (g / 2 + 1)::text, g % 2, (g % 2 + 1)::text, (g % 300)::numeric,
              (g % {items} + 1)::text, 1
         FROM generate_series(1, {realms}) r, generate_series(0, {estimate_line_items} - 1) g""",
    """INSERT INTO quickbooks.invoices (realm_id, id, doc_number, txn_date, due_date, customer_id, total_amt,
           balance, sync_token, raw)
       SELECT '91303570000' || r, g::text, 'I' || g, current_date - (g % 700), current_date - (g % 700) + 30,
              (g % {customers} + 1)::text, (g % 9000)::numeric, (g % 3 * 10)::numeric, '0',
              jsonb_build_object('Id', g::text)
         FROM generate_series(1, {realms}) r, generate_series(1, {invoices}) g""",
    """INSERT INTO quickbooks.invoice_line_items (realm_id, invoice_id, position, line_id, amount, item_id, qty)
       SELECT '91303570000' || r, (g / 2 + 1)::text, g % 2, (g % 2 + 1)::text, (g % 300)::numeric,
              (g % {items} + 1)::text, 1
         FROM generate_series(1, {realms}) r, generate_series(0, {invoice_line_items} - 1) g""",
    # 100,000 runs spread over every (realm, entity), one a minute; the newest have the highest ids.
    """INSERT INTO quickbooks.sync_runs (realm_id, entity, kind, started_at, finished_at, status, rows_fetched,
           rows_upserted)
       SELECT '91303570000' || (g % {realms} + 1),
              (ARRAY['CompanyInfo','Customer','Item','Estimate','Invoice'])[(g / {realms}) % 5 + 1],
              'cdc', now() - (({sync_runs} - g) || ' minutes')::interval,
              now() - (({sync_runs} - g) || ' minutes')::interval + interval '3 seconds',
              CASE WHEN g % 97 = 0 THEN 'failed' ELSE 'success' END, g % 50, g % 50
         FROM generate_series(1, {sync_runs}) g""",
    """INSERT INTO quickbooks.sync_state (realm_id, entity, cursor, last_success_at, last_run_id, last_run_status,
           row_count, next_run_at)
       SELECT DISTINCT ON (realm_id, entity) realm_id, entity, started_at, started_at, id, 'success',
              CASE entity WHEN 'Customer' THEN {customers} WHEN 'Item' THEN {items}
                          WHEN 'Estimate' THEN {estimates} WHEN 'Invoice' THEN {invoices} ELSE 1 END,
              started_at + interval '60 minutes'
         FROM quickbooks.sync_runs ORDER BY realm_id, entity, started_at DESC""",
    """INSERT INTO quickbooks.errors (at, service, realm_id, entity, message)
       SELECT now() - (g || ' minutes')::interval, (ARRAY['sync','tokenup','webhook'])[g % 3 + 1],
              '91303570000' || (g % {realms} + 1), 'Invoice', 'bench error ' || g
         FROM generate_series(1, {errors}) g""",
]


def seed(url: str) -> dict[str, float]:
    params = {"realms": REALMS, "sync_runs": SYNC_RUNS, "errors": ERRORS, **PER_REALM}
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        upgrade(conn)
        for sql in SEED_SQL:
            conn.execute(sql.format(**params))
        conn.execute("VACUUM ANALYZE")
        counts = {t: conn.execute(f"SELECT count(*) FROM quickbooks.{t}").fetchone()[0] for t in BIG_TABLES}
    total = sum(counts[t] for t in ENTITY_TABLES)
    print(f"seeded {total:,} entity rows, {counts['sync_runs']:,} sync_runs, {counts['errors']:,} errors"
          f" in {time.perf_counter() - started:.1f} s")
    assert total == REALMS * sum(PER_REALM.values()) and counts["sync_runs"] == SYNC_RUNS
    return {"entity_rows": total, **counts}


def measure_polls(url: str, polls: int) -> list[float]:
    timings = []
    with connect(url, autocommit=True) as conn:
        status_snapshot(conn)  # warm the connection like a running console
        for _ in range(polls):
            started = time.perf_counter()
            with conn.transaction():
                snapshot = status_snapshot(conn)
            timings.append((time.perf_counter() - started) * 1000)
    assert len(snapshot["realms"]) == REALMS and len(snapshot["recent_errors"]) == 20
    return timings


def explain(url: str) -> list[str]:
    """EXPLAIN ANALYZE every read-model query; return the big tables scanned sequentially."""
    bad = []
    with connect(url, autocommit=True) as conn:
        for name, sql in READ_MODEL_QUERIES.items():
            rows = conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING ON, SUMMARY ON) " + sql, {"limit": 20})
            plan = [r[0] for r in rows]
            print(f"\n-- {name}\n" + "\n".join(plan))
            for line in plan:
                if "Seq Scan" in line:
                    table = line.split(" on ", 1)[1].split()[0] if " on " in line else "?"
                    if table.split(".")[-1] in BIG_TABLES:
                        bad.append(f"{name}: {line.strip()}")
    return bad


def first_paint(url: str, work_dir: Path) -> float:
    from services.core.config import load_settings
    from tui.app import QBSyncApp

    settings = replace(load_settings({"DATABASE_URL": url}, dotenv=False), work_dir=work_dir)
    db = Database(url, max_size=2)

    async def run() -> float:
        started = time.perf_counter()
        app = QBSyncApp(db, settings, supervisor_socket=work_dir / "none.sock")
        async with app.run_test(size=(80, 24)) as pilot:
            while app.polls < 1:
                await pilot.pause(0.005)
            await pilot.pause()  # the refresh with the data has been composited
            elapsed = time.perf_counter() - started
            assert "Bench Company 1" in str(app.query_one("#realms").get_cell("913035700001", "company"))
        return elapsed

    try:
        return asyncio.run(run())
    finally:
        db.close()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an EMPTY database to seed (default: a temporary embedded one)")
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--paints", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    tmp = Path(tempfile.mkdtemp(prefix="qbcb"))
    server = None
    try:
        url = args.database_url
        if url is None:
            import pgserver

            server = pgserver.get_server(tmp / "pg", cleanup_mode=None)
            with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE console_bench")
            url = server.get_uri("console_bench")
        print(f"machine: {machine()}")
        with psycopg.connect(url) as conn:
            print(f"postgres: {conn.execute('SHOW server_version').fetchone()[0]}"
                  f" at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
        seed(url)
        bad = explain(url)
        timings = measure_polls(url, args.polls)
        med, p95, worst = (statistics.median(timings), sorted(timings)[int(len(timings) * 0.95) - 1],
                           max(timings))
        print(f"\npoll queries ({args.polls} polls): median {med:.2f} ms, p95 {p95:.2f} ms, max {worst:.2f} ms"
              f" (budget {POLL_BUDGET_MS:.0f} ms)")
        paints = [first_paint(url, tmp) for _ in range(args.paints)]
        print("first full paint 80x24 (headless, until the first poll is rendered): "
              + ", ".join(f"{p * 1000:.0f} ms" for p in paints) + f" (budget {PAINT_BUDGET_S * 1000:.0f} ms)")
        print("sequential scans of entity tables / sync_runs / errors: " + ("; ".join(bad) if bad else "none"))
        ok = not bad and p95 <= POLL_BUDGET_MS and max(paints) <= PAINT_BUDGET_S
        print("RESULT: " + ("within budget" if ok else "OVER BUDGET"))
        return 0 if ok else 1
    finally:
        if server is not None:
            from db.embedded import stop_embedded

            stop_embedded(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
