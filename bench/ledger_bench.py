"""Ledger benchmark (issue: the ledger): a full load of a whole QBO ledger company, three ways.

    .venv/bin/python bench/ledger_bench.py [--invoices 50000] [--latency-ms 300] [--skip-fast]
        [--skip-latency] [--skip-quiet]

The company: 50,000 invoices, 40,000 payments, 20,000 bills, 15,000 bill payments, 20,000
purchases, 5,000 journal entries, the rest in the emulator's proportions (scaled with --invoices).
1. fast: `qbsync sync --once` in a subprocess, emulator at zero latency: objects/s end to end
   (every live row of every entity / the whole sync's wall time, process start included) and
   the sync process's peak RSS. Targets: >= 10,000 objects/s, <= 250 MB.
2. latency: every request answered after --latency-ms, QBO_MAX_REQUESTS_PER_MINUTE=450: wall time
   against the rate-limit floor (pages needed / allowed rate). Target: <= 1.25x the floor.
3. quiet: after the full load, one more `sync --once` with nothing changed: the Data API calls it
   makes (target: ONE CDC call for every CDC entity), and the calls of the daily sweep of the
   entities outside CDC (a sync a day later).
4. reconcile (issue: reconciliation) of the loaded company: API calls (target: one COUNT per entity
   plus at most 6 report calls), wall time with --latency-ms on every request, and the SQL
   derivation of the trial balance alone (target: <= 5 s for 500,000 lines), with the line count.
Every run is checked for exact live-row counts against the emulator.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import Postgres, env_for, run_sync, runs, store_tokens

from services.emulator.server import EmulatorServer
from services.model.entities import ENTITIES

BASE = {"Payment": 40_000, "Bill": 20_000, "BillPayment": 15_000, "Purchase": 20_000, "JournalEntry": 5_000}


def live_counts(emulator: EmulatorServer, realm: str) -> dict[str, int]:
    stores = emulator.state.realm(realm).stores
    return {name: len(stores[name].live) for name in ENTITIES if not ENTITIES[name].company}


def check_counts(url: str, realm: str, expected: dict[str, int]) -> None:
    with psycopg.connect(url) as conn:
        for name, n in expected.items():
            table = ENTITIES[name].qualified_table
            got = conn.execute(f"SELECT count(*) FROM {table} WHERE realm_id = %s AND deleted_at IS NULL",
                               (realm,)).fetchone()[0]
            if got != n:
                raise SystemExit(f"{name}: {got} live rows, the emulator has {n}")


def data_calls(emulator: EmulatorServer, realm: str) -> dict[str, int]:
    counts = emulator.state.request_counts(realm)
    return {k: counts.get(k, 0) for k in ("query", "cdc", "read", "companyinfo") if counts.get(k)}


def reconcile(env: dict[str, str], url: str, emulator: EmulatorServer, realm: str, latency_ms: int) -> None:
    from datetime import date, timedelta

    from db.books import trial_balance
    from db.connection import Database
    from services.core.config import load_settings
    from services.reconcile.checks import reconcile_realm

    settings = load_settings(env, dotenv=False)
    db = Database(url, max_size=4)
    try:
        with db.transaction() as conn:
            lines = sum(conn.execute(f"SELECT count(*) FROM quickbooks.{s.line.table}").fetchone()[0]
                        for s in ENTITIES.values() if s.line)
            as_of, fy_start = date.today() + timedelta(days=1), date(date.today().year, 1, 1)
            started = time.perf_counter()
            tb = trial_balance(conn, realm, as_of, fy_start)
            loaded_s = time.perf_counter() - started
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # what autovacuum does shortly after a bulk load
        with db.transaction() as conn:
            started = time.perf_counter()
            trial_balance(conn, realm, as_of, fy_start)
            analyzed_s = time.perf_counter() - started
        print(f"\nreconcile: derived trial balance of {len(tb)} accounts from {lines:,} lines in {loaded_s:.2f} s"
              f" right after the load, {analyzed_s:.2f} s once the tables are analyzed")
        emulator.state.configure(latency_ms=latency_ms)
        emulator.state.reset_counts()
        started = time.perf_counter()
        outcome = reconcile_realm(db, settings, realm, sync_first=False)
        wall = time.perf_counter() - started
        emulator.state.configure(latency_ms=0)
        counts = emulator.state.request_counts(realm)
        print(f"  reconcile at {latency_ms} ms latency: {outcome.status}, {len(outcome.results)} checks in {wall:.1f} s;"
              f" calls: {counts.get('query', 0)} COUNT queries + {counts.get('report', 0)} reports"
              f" ({sum(1 for n in ENTITIES if not ENTITIES[n].company)} entities)")
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-fast", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quiet", action="store_true")
    parser.add_argument("--skip-reconcile", action="store_true")
    args = parser.parse_args()
    scale = args.invoices / 50_000
    sizes = {name: int(n * scale) for name, n in BASE.items()}

    pg = Postgres()
    emulator = EmulatorServer(rate_limit_per_minute=500)
    emulator.start()
    try:
        started = time.perf_counter()
        realm = emulator.state.create_realm(customers=int(10_000 * scale), items=int(1_000 * scale),
                                            invoices=args.invoices, estimates=int(10_000 * scale), seed=1,
                                            sizes=sizes, sales_tax=True)
        expected = live_counts(emulator, realm)
        total = sum(expected.values())
        print(f"emulator ledger company generated in {time.perf_counter() - started:.1f} s: {total:,} live objects")
        print("  " + ", ".join(f"{n} {c:,}" for n, c in sorted(expected.items(), key=lambda kv: -kv[1])))
        pages = 1 + sum(max(1, math.ceil(n / 1000)) for n in expected.values())  # + CompanyInfo

        if not args.skip_fast:
            url = pg.fresh("ledger_fast")
            env = env_for(url, emulator, QBO_MAX_CONCURRENCY=str(args.concurrency))
            store_tokens(url, env, emulator, realm)
            emulator.state.reset_counts()
            elapsed, rss, _out = run_sync(env, realm)
            check_counts(url, realm, expected)
            calls = sum(data_calls(emulator, realm).values())
            print(f"\nfast (zero latency, QBO_MAX_CONCURRENCY={args.concurrency}): {total:,} objects in {elapsed:.1f} s"
                  f" = {total / elapsed:,.0f} objects/s end to end; peak RSS {rss} MB; {calls} API calls"
                  f" (minimal pages {pages})")
            slowest = sorted(runs(url, realm), key=lambda r: -float(r[4]))[:5]
            print("  slowest entity runs: " + ", ".join(f"{e} {float(s):.1f} s ({f:,} rows)"
                                                      for e, f, _u, _a, s in slowest))
            if not args.skip_quiet:
                emulator.state.reset_counts()
                quiet_s, _rss, _ = run_sync(env, realm)
                print(f"\nquiet hour: a sync with nothing changed made {data_calls(emulator, realm)} "
                      f"({quiet_s:.1f} s)")
                with psycopg.connect(url) as conn:
                    conn.execute("UPDATE quickbooks.sync_state SET last_full_sync_at = last_full_sync_at"
                                 " - interval '25 hours', last_success_at = last_success_at - interval '25 hours'"
                                 " WHERE realm_id = %s", (realm,))
                emulator.state.reset_counts()
                run_sync(env, realm)
                swept = [n for n in ENTITIES if ENTITIES[n].swept]
                print(f"  a day later (the daily sweep of {', '.join(swept)} and CompanyInfo): "
                      f"{data_calls(emulator, realm)}")

            if not args.skip_reconcile:
                reconcile(env, url, emulator, realm, args.latency_ms)

        if not args.skip_latency:
            url = pg.fresh("ledger_latency")
            env = env_for(url, emulator, QBO_MAX_REQUESTS_PER_MINUTE="450", QBO_MAX_CONCURRENCY=str(args.concurrency))
            store_tokens(url, env, emulator, realm)
            emulator.state.configure(latency_ms=args.latency_ms)
            emulator.state.reset_counts()
            elapsed, rss, _ = run_sync(env, realm)
            emulator.state.configure(latency_ms=0)
            check_counts(url, realm, expected)
            calls = sum(data_calls(emulator, realm).values())
            lat = args.latency_ms / 1000
            floor = max(math.ceil(pages / args.concurrency) * lat, ((pages - 1) // 450) * 60.0)
            print(f"\nlatency {args.latency_ms} ms, 450 requests/min, QBO_MAX_CONCURRENCY={args.concurrency}:"
                  f" {elapsed:.1f} s for {calls} calls (pages needed {pages}); floor {floor:.1f} s;"
                  f" {elapsed / floor:.2f}x the floor; peak RSS {rss} MB")
    finally:
        emulator.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
