"""`qbsync status [--json]` as a subprocess: SPEC section 4 shape, exit codes 0/1/2, no secrets;
and services/ops/supervisor_rpc.py against a real supervisord."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.console import (
    ACCESS_TOKEN,
    ENTITIES,
    HEALTHY_REALM,
    REAUTH_REALM,
    REFRESH_TOKEN,
    ROWS,
    Supervisord,
    insert_console_realm,
    seed_console_state,
)

from services.model.entities import ENTITIES as SPECS
from services.model.entities import GROUPS
from services.ops.supervisor_rpc import SupervisorError, SupervisorUnavailable, process_states, restart_process

QBSYNC = str(Path(sys.executable).parent / "qbsync")


@pytest.fixture
def status_env(database_url: str) -> dict[str, str]:
    """Like qbsync_env, minus the emulator: `status` only reads PostgreSQL and supervisord."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL"))}
    env.update({"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qbst", dir="/tmp"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _status(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QBSYNC, "status", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def _assert_spec_shape(doc: dict) -> None:
    assert {"realms", "processes", "recent_errors"} <= set(doc)
    for realm in doc["realms"]:
        assert {"realm_id", "company_name", "environment", "token", "entities"} <= set(realm)
        assert {"status", "access_expires_at", "refresh_expires_at", "hard_expires_at", "last_refreshed_at",
                "last_error"} <= set(realm["token"])
        assert realm["token"]["status"] in ("active", "needs_reauth", "disconnected")
        assert [e["entity"] for e in realm["entities"]] == list(ENTITIES)
        for ent in realm["entities"]:
            assert {"entity", "last_success_at", "last_run_status", "rows", "last_error"} <= set(ent)
            assert ent["group"] == SPECS[ent["entity"]].group and ent["group"] in GROUPS  # our extension
            if ent["last_success_at"]:
                assert datetime.fromisoformat(ent["last_success_at"]).utcoffset() is not None
    for proc in doc["processes"]:
        assert {"name", "state", "uptime_s"} <= set(proc)
    for err in doc["recent_errors"]:
        assert {"at", "service", "realm_id", "entity", "message"} <= set(err)
        assert datetime.fromisoformat(err["at"]).utcoffset() is not None


def _no_secrets(result: subprocess.CompletedProcess[str]) -> None:
    for secret in (ACCESS_TOKEN, REFRESH_TOKEN):
        assert secret not in result.stdout and secret not in result.stderr


def test_status_json_healthy_exits_0(db, status_env, tmp_path) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, datetime.now(timezone.utc), HEALTHY_REALM, "Acme Café & Sons")
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    _assert_spec_shape(doc)
    assert doc["processes"] == []  # no supervisord here
    (realm,) = doc["realms"]
    assert realm["company_name"] == "Acme Café & Sons" and realm["token"]["status"] == "active"
    assert [e["rows"] for e in realm["entities"]] == [ROWS[name] for name in ENTITIES]
    _no_secrets(result)


def test_status_json_warning_exits_1(db, status_env, tmp_path) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, datetime.now(timezone.utc), HEALTHY_REALM, "Acme",
                             refresh_left=timedelta(days=12))
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    _assert_spec_shape(doc)
    assert doc["health"]["level"] == "warning"
    assert any("refresh token idle expiry" in r for r in doc["health"]["reasons"])
    _no_secrets(result)


def test_status_json_critical_exits_2_on_needs_reauth(db, status_env, tmp_path) -> None:
    with db.transaction() as conn:
        seed_console_state(conn, datetime.now(timezone.utc))
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    _assert_spec_shape(doc)
    assert [r["token"]["status"] for r in doc["realms"]] == ["active", "needs_reauth"]
    assert doc["recent_errors"][0]["service"] == "tokenup"
    assert any(f"qbsync connect --realm-id {REAUTH_REALM}" in r for r in doc["health"]["reasons"])
    _no_secrets(result)


def test_status_table_is_short_and_readable(db, status_env, tmp_path) -> None:
    with db.transaction() as conn:
        seed_console_state(conn, datetime.now(timezone.utc))
    result = _status(status_env, tmp_path)
    assert result.returncode == 2
    out = result.stdout
    assert "qbsync status: CRITICAL" in out
    assert "Acme Café & Sons" in out and "token active" in out
    assert f"token needs_reauth  -> fix: qbsync connect --realm-id {REAUTH_REALM}" in out
    assert "Invoice" in out and "12,873" in out
    assert "supervisord not reachable" in out
    assert "signature mismatch" in out
    _no_secrets(result)


def test_status_table_lists_every_entity_group_by_group_with_the_failed_ones_error(db, status_env,
                                                                                 tmp_path) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, datetime.now(timezone.utc), HEALTHY_REALM, "Acme", run_entity="Bill",
                             run_status="failed", run_error="FatalQBOError: 6240 duplicate document\nsecond line",
                             entities=ENTITIES[:-1])  # TaxAgency never synced
    result = _status(status_env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    words = {word for line in lines for word in line.replace("·", " ").split()}
    assert set(ENTITIES) <= words, sorted(set(ENTITIES) - words)
    # One summary line per group, in GROUPS order, each followed by its entities.
    group_lines = [i for i, line in enumerate(lines) if line.split()[:1] and line.split()[0] in GROUPS
                   and "oldest success" in line]
    assert [lines[i].split()[0] for i in group_lines] == list(GROUPS)
    purchases = lines[group_lines[GROUPS.index("Purchases")]]
    assert "1 failed: Bill; 5 ok" in purchases
    assert any("Bill 4,210 FAILED" in line for line in lines)
    assert "      ! Bill: FatalQBOError: 6240 duplicate document second line" in lines
    assert "1 never synced; 7 ok" in lines[group_lines[GROUPS.index("Lists")]]
    assert any("TaxAgency never" in line for line in lines)
    entity_lines = [line for line in lines if line.startswith("      ") and not line.startswith("      !")]
    assert len(entity_lines) <= 2 * len(GROUPS) and all(len(line) <= 100 for line in entity_lines)
    _no_secrets(result)


def test_status_database_unreachable_is_critical_one_line(status_env, tmp_path) -> None:
    env = dict(status_env, DATABASE_URL="postgresql://qbsync:pw-secret-123@127.0.0.1:9/qbsync")
    result = _status(env, tmp_path, "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("qbsync: database unavailable:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "pw-secret-123" not in result.stderr


@pytest.mark.slow
def test_status_reports_supervisord_processes_and_fatal_is_critical(db, status_env, short_dir) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, datetime.now(timezone.utc), HEALTHY_REALM, "Acme")
    sup = Supervisord(short_dir)
    try:
        sup.wait_states({"tokenup": "RUNNING", "sync": "RUNNING", "webhook": "FATAL"})
        result = _status(status_env, short_dir, "--json")
        assert result.returncode == 2, result.stdout + result.stderr
        doc = json.loads(result.stdout)
        _assert_spec_shape(doc)
        assert [(p["name"], p["state"]) for p in doc["processes"]] == [
            ("tokenup", "RUNNING"), ("sync", "RUNNING"), ("webhook", "FATAL")]
        assert any("webhook is FATAL" in r for r in doc["health"]["reasons"])
        table = _status(status_env, short_dir)
        assert table.returncode == 2
        lines = table.stdout.splitlines()
        assert any(line.split()[:3] == ["tokenup", "RUNNING", "up"] for line in lines), table.stdout
        assert any(line.split() == ["webhook", "FATAL"] for line in lines), table.stdout
    finally:
        sup.stop()


def test_supervisor_rpc_restart_and_unreachable(short_dir) -> None:
    assert process_states(short_dir / "var" / "supervisor.sock") == []
    with pytest.raises(SupervisorUnavailable):
        restart_process(short_dir / "var" / "supervisor.sock", "sync")
    sup = Supervisord(short_dir)
    try:
        sup.wait_states({"sync": "RUNNING"})
        before = sup.pid_of("sync")
        assert restart_process(sup.socket, "sync") == "RUNNING"
        assert sup.pid_of("sync") != before
        with pytest.raises(SupervisorError, match="SPAWN_ERROR"):  # webhook exits at once: start fails
            restart_process(sup.socket, "qbsync:webhook")
        with pytest.raises(SupervisorError):
            restart_process(sup.socket, "nosuchprogram")
    finally:
        sup.stop()
    assert process_states(sup.socket) == []  # socket gone or refusing once supervisord stopped
