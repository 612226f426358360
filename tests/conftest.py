"""Shared fixtures: a real PostgreSQL the suite starts itself, and the QBO emulator on loopback.

- `pg_server` (session): an embedded PostgreSQL (pgserver) in a temporary directory,
  stopped at the end of the session. `template_url` holds a migrated template database.
- `database_url` (per test): a fresh database cloned from the migrated template, dropped after.
- `db`: a `db.connection.Database` pool on it.
- `emulator` (per test): `services.emulator.server.EmulatorServer` on 127.0.0.1, stopped after.
- `qbsync_env`: environment variables pointing qbsync at both (for subprocesses);
  `settings`: the same as a `Settings` object.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from db.connection import Database
from db.migrate import upgrade

_counter = itertools.count()


class PgServer:
    def __init__(self) -> None:
        import pgserver

        self.dir = Path(tempfile.mkdtemp(prefix="qbt"))
        self.pgdata = self.dir / "pg"
        self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.admin_url = self._server.get_uri()

    def url(self, database: str) -> str:
        return self._server.get_uri(database)

    def stop(self) -> None:
        from db.embedded import stop_embedded

        stop_embedded(self.pgdata)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE qbsync_template")
    with psycopg.connect(server.url("qbsync_template")) as conn:
        upgrade(conn)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE qbsync_template')
    try:
        yield pg_server.url(name)
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(pg_server: PgServer) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    name = f"e_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.url(name)
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, max_size=4)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def emulator():
    from services.emulator.server import EmulatorServer

    # strict: a new refresh token on every refresh (Intuit reuses one for ~24 h, the emulator's
    # default), so every test proves the newest token is the one kept
    server = EmulatorServer(host="127.0.0.1", port=0, refresh_token_reuse_seconds=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def qbsync_env(database_url: str, emulator, tmp_path: Path) -> dict[str, str]:
    """Environment for running qbsync (in-process or as a subprocess) against both."""
    from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET, EMULATOR_VERIFIER_TOKEN

    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL"))}
    env.update({
        "DATABASE_URL": database_url,
        "QBO_CLIENT_ID": EMULATOR_CLIENT_ID,
        "QBO_CLIENT_SECRET": EMULATOR_CLIENT_SECRET,
        "QBO_WEBHOOK_VERIFIER_TOKEN": EMULATOR_VERIFIER_TOKEN,
        "QBO_REDIRECT_URI": "http://127.0.0.1:9/oauth/callback",
        "QBO_API_BASE_URL": emulator.url,
        "QBO_TOKEN_URL": f"{emulator.url}/oauth2/v1/tokens/bearer",
        "QBO_AUTHORIZE_URL": f"{emulator.url}/connect/oauth2",
        "QBO_REVOKE_URL": f"{emulator.url}/oauth2/v1/tokens/revoke",
        "QBO_RETRY_BASE_SECONDS": "0.05",
        "TOKEN_CHECK_INTERVAL_SECONDS": "1",
        "RESTART_DELAY_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def settings(qbsync_env: dict[str, str]):
    from services.core.config import load_settings

    return load_settings(qbsync_env, dotenv=False)
