from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from support import wait_for

from db.migrate import available_migrations, upgrade

ENTITY_KEYS = {
    "companies": ["id"], "customers": ["realm_id", "id"], "items": ["realm_id", "id"],
    "estimates": ["realm_id", "id"], "invoices": ["realm_id", "id"],
    "estimate_line_items": ["realm_id", "estimate_id", "position"],
    "invoice_line_items": ["realm_id", "invoice_id", "position"],
}


def _primary_key(conn: psycopg.Connection, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)", (f"quickbooks.{table}",))]


def test_fresh_then_repeated_upgrade(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn:
        first = upgrade(conn)
        assert first == [v for v, _ in available_migrations()]
        assert upgrade(conn) == []
        for table, key in ENTITY_KEYS.items():
            assert _primary_key(conn, table) == key


def test_types_are_exact(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'quickbooks'").fetchall()
    types = {(t, c): d for t, c, d in rows}
    money = [("invoices", "total_amt"), ("invoices", "balance"), ("customers", "balance"),
             ("items", "unit_price"), ("invoice_line_items", "amount"), ("estimates", "total_amt")]
    assert all(types[m] == "numeric" for m in money)
    times = [k for k, d in types.items() if k[1].endswith(("_at", "last_updated"))]
    assert times and all(types[k] == "timestamp with time zone" for k in times)
    assert types[("tokens", "id")] == "bigint"


def test_realm_id_is_unique_on_tokens(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO quickbooks.tokens (realm_id, refresh_token) VALUES ('1', 'a')"
                     " ON CONFLICT (realm_id) DO UPDATE SET refresh_token = excluded.refresh_token")
        conn.execute("INSERT INTO quickbooks.tokens (realm_id, refresh_token) VALUES ('1', 'b')"
                     " ON CONFLICT (realm_id) DO UPDATE SET refresh_token = excluded.refresh_token")
        assert conn.execute("SELECT count(*), max(refresh_token) FROM quickbooks.tokens").fetchone() == (1, "b")


def test_concurrent_upgrades_are_safe(empty_database_url: str) -> None:
    code = ("import sys, psycopg; from db.migrate import upgrade; "
            "c = psycopg.connect(sys.argv[1]); print(len(upgrade(c))); c.close()")
    root = Path(__file__).parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_database_url], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(int(out.strip()))
    assert sorted(results) == [0, 0, 0, len(available_migrations())]


@pytest.mark.slow
def test_cli_db_upgrade_uses_the_embedded_default(tmp_path: Path) -> None:
    import os
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    qbsync = Path(sys.executable).parent / "qbsync"
    try:
        proc = subprocess.run([str(qbsync), "db", "upgrade"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "embedded PostgreSQL" in proc.stderr and "applied 0001_initial" in proc.stdout
        again = subprocess.run([str(qbsync), "db", "upgrade"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "up to date" in again.stdout
    finally:
        from db.embedded import stop_embedded
        stop_embedded(tmp_path / "var" / "pg")


def test_upgrade_interrupted_by_a_dropped_connection_is_one_line_and_applies_nothing(empty_database_url: str,
                                                                                     tmp_path: Path) -> None:
    """Kill the migrating backend while it waits on the migration lock: one line, exit 1, nothing applied."""
    import os

    env = {**os.environ, "DATABASE_URL": empty_database_url}
    with psycopg.connect(empty_database_url) as blocker, \
            psycopg.connect(empty_database_url, autocommit=True) as watcher:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (0x71B5_0001,))  # hold the migration lock
        proc = subprocess.Popen([str(Path(sys.executable).parent / "qbsync"), "db", "upgrade"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def lock_waiters() -> list[int]:
                return [r[0] for r in watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")]
            victims = wait_for(lock_waiters, 30, "the upgrade to wait on the migration lock", interval=0.1)
            for pid in victims:
                watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        blocker.rollback()
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "schema upgrade interrupted, nothing applied" in lines[0], err
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('quickbooks.schema_migrations')").fetchone()[0] is None
