"""The database layer against the ways Neon (and any PostgreSQL) really behaves.

- TLS: `sslmode=require` (and `verify-full` with the CA) works against a real TLS server, the
  session is encrypted (pg_stat_ssl); a server that refuses TLS gives one clear line.
- Dropped connections: every pooled connection killed server-side (Neon's suspend) and a
  server restart between two transactions are invisible to the next transaction.
- PgBouncer transaction mode: after a real workload (sync, token refresh, webhook inbox) no
  pooled session holds prepared statements, temp tables, session settings, advisory locks,
  LISTEN channels or cursors; a static scan finds no session-level SQL in services/ and db/;
  the workload also works when every transaction gets a different backend.
- The database going away under running `tokenup` and `sync` workers: they stay up, log
  one-line errors without secrets, and resume.
"""

from __future__ import annotations

import ast
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest
from support import free_port, wait_for
from support.realms import assert_exact, connect_realm, realm_synced, request_status

from db.connection import Database
from db.embedded import stop_embedded
from db.migrate import upgrade
from services.core.errors import DatabaseUnavailable
from services.model.entities import ENTITY_NAMES

ROOT = Path(__file__).resolve().parent.parent
QBSYNC = [sys.executable, "-m", "services.cli"]
AS_ROOT = os.geteuid() == 0  # pgserver then runs the server as the system user `pgserver`


# -- a dedicated server ------------------------------------------------------------------------

def _pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver


def _chown_to_server(path: Path, mode: int) -> None:
    path.chmod(mode)
    if AS_ROOT:
        import pwd

        user = pwd.getpwnam("pgserver")
        os.chown(path, user.pw_uid, user.pw_gid)


class DedicatedServer:
    """A PostgreSQL of this test's own (pgserver's binaries, a short temporary directory).

    `tcp_port=None`: unix socket only, started with pgserver.get_server. With a port it is
    started with pg_ctl directly (pgserver always passes `-h ""`, which would override
    listen_addresses) on 127.0.0.1:port plus a unix socket in the data directory.
    Stopped by PID (`stop`, `close`).
    """

    def __init__(self, *, tcp_port: int | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qbr", dir="/tmp"))  # short: the socket lives here
        self.pgdata = self.workdir / "pg"
        self.tcp_port = tcp_port
        self._server = _pgserver().get_server(self.pgdata, cleanup_mode=None)
        self.socket_url = self._server.get_uri()
        if tcp_port is not None:
            self.stop()
            self.start()

    @property
    def user(self) -> str | None:
        return "pgserver" if AS_ROOT else None

    def url(self, database: str = "postgres") -> str:
        """The unix-socket URL (works whatever TLS/TCP settings are)."""
        if self.tcp_port is None:
            return self._server.get_uri(database)
        return f"postgresql://postgres@/{database}?host={self.pgdata}&port={self.tcp_port}"

    def tcp_url(self, database: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.tcp_port}/{database}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        """Fast shutdown by the postmaster's PID (what Neon's suspend looks like to clients)."""
        stop_embedded(self.pgdata)
        self._server.cleanup()  # forget it, so get_server starts it again

    def start(self) -> None:
        if self.tcp_port is None:
            self._server = _pgserver().get_server(self.pgdata, cleanup_mode=None)
            return
        from pgserver._commands import pg_ctl

        options = f"-h 127.0.0.1 -p {self.tcp_port} -k {self.pgdata}"
        pg_ctl(["-w", "-o", options, "-l", str(self.pgdata / "log"), "start"], pgdata=self.pgdata,
               user=self.user, timeout=60)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True)

    def close(self) -> None:
        stop_embedded(self.pgdata)
        try:
            self._server.cleanup()
        except Exception:  # noqa: BLE001 - already forgotten by stop()
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def dedicated_server(**kw: int | None) -> Iterator[DedicatedServer]:
    server = DedicatedServer(**kw)
    try:
        yield server
    finally:
        server.close()


def one_line_error(text: str) -> str:
    """The single non-empty line of `text` (asserting there is exactly one, and no traceback)."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# -- 1. TLS ------------------------------------------------------------------------------------

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


class TlsTerminatingProxy:
    """What Neon's proxy does in front of PostgreSQL: TLS with the client, plain TCP to the server.

    pgserver's PostgreSQL is built without OpenSSL ("SSL is not supported by this build"), so
    TLS is terminated here, in a thread of the test, with a certificate from a throw-away CA.
    Like a `hostssl`-only server it refuses a client that does not ask for TLS. `handshakes`
    holds the TLS version of every connection it forwarded.
    """

    def __init__(self, backend_port: int, cert: Path, key: Path) -> None:
        self.backend_port = backend_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes: list[str] = []
        self.refused_plain = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        backend = None
        try:
            _length, code = struct.unpack("!II", _recv_exact(client, 8))
            if code == GSSENC_REQUEST:
                client.sendall(b"N")
                _length, code = struct.unpack("!II", _recv_exact(client, 8))
            if code != SSL_REQUEST:
                self.refused_plain += 1
                return
            client.sendall(b"S")
            tls = self.context.wrap_socket(client, server_side=True)
            client = tls
            self.handshakes.append(str(tls.version()))
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
            while True:
                readable, _, _ = select.select([tls, backend], [], [], 0.5)
                if tls in readable or tls.pending():
                    data = tls.recv(65536)
                    if not data:
                        return
                    backend.sendall(data)
                if backend in readable:
                    data = backend.recv(65536)
                    if not data:
                        return
                    tls.sendall(data)
        except (OSError, ConnectionError, ssl.SSLError):
            return
        finally:
            client.close()
            if backend is not None:
                backend.close()

    def close(self) -> None:
        self.listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


def _env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL", "PG"))}
    env.update({"DATABASE_URL": url, "PYTHONUNBUFFERED": "1"})
    return env


def _db_upgrade(url: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*QBSYNC, "db", "upgrade"], env=_env_for(url), cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_sslmode_require_works_encrypted_and_a_server_without_tls_fails_in_one_line(tmp_path: Path) -> None:
    import trustme

    ca, other_ca = trustme.CA(), trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file, other_ca_file = (tmp_path / n for n in ("server.crt", "server.key", "ca.pem", "other.pem"))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca.cert_pem.write_to_path(str(other_ca_file))
    with ExitStack() as stack:
        server = stack.enter_context(dedicated_server(tcp_port=free_port()))
        proxy = TlsTerminatingProxy(server.tcp_port, cert, key)
        stack.callback(proxy.close)
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?sslmode=require"

        done = _db_upgrade(url, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "schema upgraded: applied 0001_initial" in done.stdout
        assert proxy.handshakes and proxy.refused_plain == 0

        db = Database(url, max_size=2)
        try:
            with db.transaction() as conn:
                assert conn.pgconn.ssl_in_use
                migrations = conn.execute("SELECT count(*) FROM quickbooks.schema_migrations").fetchone()[0]
                conn.execute("INSERT INTO quickbooks.errors (service, message) VALUES ('test', 'over TLS')")
            assert migrations >= 2
            with db.transaction() as conn:
                assert conn.execute("SELECT message FROM quickbooks.errors").fetchall() == [("over TLS",)]
        finally:
            db.close()
        assert all(version.startswith("TLSv1.") for version in proxy.handshakes), proxy.handshakes
        # a client that does not ask for TLS is refused, like a hostssl-only server does
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?sslmode=disable",
                            connect_timeout=5).close()
        assert proxy.refused_plain == 1

        # what Neon's documentation recommends: the server certificate checked against the CA
        verified = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?sslmode=verify-full&sslrootcert={ca_file}"
        assert _db_upgrade(verified, tmp_path).returncode == 0
        wrong_ca = verified.replace(str(ca_file), str(other_ca_file))
        refused = _db_upgrade(wrong_ca, tmp_path)
        assert refused.returncode == 1
        assert "certificate verify failed" in one_line_error(refused.stderr)

        # a server without TLS (the real PostgreSQL straight, its build has none): one clear line
        plain = server.tcp_url(sslmode="require")
        refused = _db_upgrade(plain, tmp_path)
        assert refused.returncode == 1
        line = one_line_error(refused.stderr)
        assert line.startswith("qbsync: database unavailable: cannot connect to PostgreSQL:")
        assert "server does not support SSL, but SSL was required" in line
        db = Database(plain, max_size=2, timeout=2)
        try:
            with pytest.raises(DatabaseUnavailable) as raised:
                with db.transaction():
                    pass
        finally:
            db.close()
        assert "server does not support SSL, but SSL was required" in raised.value.one_line()
        assert "\n" not in raised.value.one_line()


# -- 2. dropped connections ----------------------------------------------------------------------

def _fill(db: Database, n: int) -> set[int]:
    """Open `n` transactions at once so the pool holds `n` connections; their backend pids."""
    with ExitStack() as stack:
        conns = [stack.enter_context(db.transaction()) for _ in range(n)]
        return {conn.execute("SELECT pg_backend_pid()").fetchone()[0] for conn in conns}


def _terminate(admin_url: str, pids: set[int]) -> int:
    """pg_terminate_backend each pid and wait for it to be gone (what Neon's suspend does)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        return sum(1 for pid in pids
                   if admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()[0])


def test_every_pooled_connection_killed_server_side_is_replaced_invisibly(database_url: str) -> None:
    db = Database(database_url, max_size=8)  # the production pool size
    try:
        old = _fill(db, 8)
        assert len(old) == 8
        assert _terminate(database_url, old) == 8
        # the next transaction must not see it: all eight dead ones are discarded, a fresh one serves
        with db.transaction() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            conn.execute("INSERT INTO quickbooks.errors (service, message) VALUES ('test', 'after suspend')")
        assert pid not in old
        again = _fill(db, 8)
        assert not again & old
        with db.transaction() as conn:
            assert conn.execute("SELECT count(*) FROM quickbooks.errors WHERE message = 'after suspend'"
                                ).fetchone() == (1,)

        # killed in the middle of a transaction: one clear error, nothing of it committed, then fine
        with pytest.raises(DatabaseUnavailable) as raised:
            with db.transaction() as conn:
                conn.execute("INSERT INTO quickbooks.errors (service, message) VALUES ('test', 'lost')")
                _terminate(database_url, {conn.info.backend_pid})
                conn.execute("SELECT 1")
        assert "terminating connection due to administrator command" in raised.value.one_line()
        assert "\n" not in raised.value.one_line()
        with db.transaction() as conn:
            assert conn.execute("SELECT count(*) FROM quickbooks.errors WHERE message = 'lost'").fetchone() == (0,)
    finally:
        db.close()


@pytest.mark.slow
def test_a_server_restart_between_transactions_is_survived_by_the_same_pool() -> None:
    with dedicated_server() as server:
        db = Database(server.url(), max_size=4, timeout=3)
        try:
            old = _fill(db, 4)
            # restarted while idle: the next transaction simply works
            server.stop()
            server.start()
            with db.transaction() as conn:
                assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] not in old
            old = _fill(db, 4)
            # a transaction while it is down: DatabaseUnavailable naming the reason, on one line
            server.stop()
            with pytest.raises(DatabaseUnavailable) as raised:
                with db.transaction():
                    pass
            message = raised.value.one_line()
            assert "cannot connect to PostgreSQL" in message and "\n" not in message
            assert "No such file or directory" in message  # libpq's reason, not only "timed out"
            server.start()
            # the worker pattern retries; the first try after the restart already succeeds
            with db.transaction() as conn:
                assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] not in old
            assert len(_fill(db, 4)) == 4
        finally:
            db.close()


# -- 3. PgBouncer transaction mode ---------------------------------------------------------------

class RecordingDatabase(Database):
    """The real pool; notes which backend served each transaction, on which thread."""

    def __init__(self, url: str, **kw: int) -> None:
        super().__init__(url, **kw)
        self.used: list[tuple[int, int]] = []  # (thread id, backend pid), in order
        self._used_lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with super().transaction() as conn:
            with self._used_lock:
                self.used.append((threading.get_ident(), conn.info.backend_pid))
            yield conn


def _workload(db: Database, settings, emulator) -> str:
    """What the three workers do, through `db`: tokens stored, a full sync (concurrent listing,
    COPY into ON COMMIT DROP temp tables, advisory xact locks, the shared request budget), a CDC
    sync, a forced token refresh (row lock + SET LOCAL), a webhook delivery stored by the real
    receiver and applied from the inbox, and a --full sync with delete reconciliation."""
    import json

    import requests

    from services.sync.apply import process_inbox
    from services.sync.engine import sync_realm
    from services.tokens.vault import refresh_realm
    from services.webhook.receiver import ReceiverServer, make_app, sign

    realm = connect_realm(db, settings, emulator, customers=15, items=5, invoices=12, estimates=3)
    first = sync_realm(db, settings, realm)
    assert len(first) == len(ENTITY_NAMES) and all(o.status == "success" and o.kind == "full" for o in first), first
    admin = emulator.admin
    admin.mutate(realm, "Customer", "update", id=admin.entities(realm, "Customer")[0]["Id"])
    second = sync_realm(db, settings, realm)
    assert second and all(o.status == "success" and o.kind == "cdc" for o in second), second
    assert refresh_realm(db, settings, realm, force=True, reason="test").refreshed

    invoice = admin.mutate(realm, "Invoice", "update", id=admin.entities(realm, "Invoice")[0]["Id"])
    body = json.dumps({"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
        {"name": "Invoice", "id": invoice["Id"], "operation": "Update",
         "lastUpdated": invoice["MetaData"]["LastUpdatedTime"]}]}}]}).encode()
    receiver = ReceiverServer(make_app(db, settings), "127.0.0.1", 0).start()
    try:
        answer = requests.post(f"http://127.0.0.1:{receiver.port}/webhooks/quickbooks", data=body, timeout=30,
                               headers={"intuit-signature": sign(settings.webhook_verifier_token.reveal(), body)})
    finally:
        receiver.stop()
    assert answer.json() == {"stored": 1, "duplicates": 0}
    assert process_inbox(db, settings).processed == 1

    admin.mutate(realm, "Invoice", "delete", id=admin.entities(realm, "Invoice")[1]["Id"])
    full = sync_realm(db, settings, realm, full=True)
    assert full and all(o.status == "success" for o in full), full
    assert_exact(db, emulator, realm)
    return realm


SESSION_STATE = """SELECT pg_backend_pid(),
    (SELECT count(*) FROM pg_prepared_statements) AS prepared_statements,
    (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_tables,
    (SELECT count(*) FROM pg_settings WHERE source = 'session') AS session_settings,
    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
    (SELECT count(*) FROM pg_listening_channels()) AS listen_channels,
    (SELECT count(*) FROM pg_cursors) AS cursors"""
CLEAN = (0, 0, 0, 0, 0, 0)


def _session_states(db: Database) -> dict[int, tuple[int, ...]]:
    """SESSION_STATE of every idle pooled connection (all held at once, so each is asked)."""
    idle = db._pool.get_stats().get("pool_available", 0)
    with ExitStack() as stack:
        conns = [stack.enter_context(db.transaction()) for _ in range(idle)]
        rows = [conn.execute(SESSION_STATE).fetchone() for conn in conns]
    return {row[0]: tuple(row[1:]) for row in rows}


def test_session_state_detector_sees_what_pgbouncer_would_break(database_url: str) -> None:
    """The check below can fail: a session that prepares, keeps a temp table, SETs, locks, LISTENs."""
    with psycopg.connect(database_url, autocommit=True, prepare_threshold=0) as conn:
        conn.execute("SELECT 1 WHERE %s", (True,))
        conn.execute("CREATE TEMP TABLE kept (id int)")
        conn.execute("SET work_mem = '8MB'")
        conn.execute("SELECT pg_advisory_lock(42)")
        conn.execute("LISTEN qbsync_test")
        with conn.transaction():
            prepared, temp, settings, locks, channels, _cursors = conn.execute(SESSION_STATE).fetchone()[1:]
    assert prepared >= 1 and (temp, settings, locks, channels) == (1, 1, 1, 1)


def test_pooled_sessions_hold_no_state_after_a_real_workload(database_url: str, settings, emulator) -> None:
    db = RecordingDatabase(database_url, max_size=8)
    try:
        _workload(db, settings, emulator)
        states = _session_states(db)
    finally:
        db.close()
    assert len(states) >= 2, "the workload should have used several connections"
    assert set(states) <= {pid for _, pid in db.used}, "inspected connections must be the workload's own"
    assert {pid: state for pid, state in states.items() if state != CLEAN} == {}


class FreshBackendDatabase(RecordingDatabase):
    """Every transaction on a brand-new backend: the connection is marked expired before it goes
    back, so the pool closes it (psycopg_pool's max_lifetime check) and the next one is new."""

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with super().transaction() as conn:
            yield conn
            conn._expire_at = 0.0  # test-only: psycopg_pool discards an expired connection on return


def test_the_workload_works_when_every_transaction_gets_a_new_backend(database_url: str, settings,
                                                                      emulator) -> None:
    """Nothing relies on session state left by an earlier transaction (prepared statements,
    temp tables, SET, session locks): each of the workload's transactions is on a new backend."""
    db = FreshBackendDatabase(database_url, max_size=8)
    try:
        _workload(db, settings, emulator)
    finally:
        db.close()
    pids = [pid for _, pid in db.used]
    assert len(pids) > 50 and len(set(pids)) == len(pids)


def test_the_workload_works_on_three_rotating_shared_backends(database_url: str, settings, emulator) -> None:
    """PgBouncer in transaction mode hands each transaction any of a few server connections,
    shared by every code path. psycopg_pool hands out the least recently used idle connection,
    so with three always open every code path runs on sessions the others used before; the
    workload still ends exact and the sessions clean."""
    db = RecordingDatabase(database_url, min_size=3, max_size=3)
    try:
        db._pool.wait(timeout=30)
        _workload(db, settings, emulator)
        states = _session_states(db)
    finally:
        db.close()
    served: dict[int, int] = {}
    for _, pid in db.used:
        served[pid] = served.get(pid, 0) + 1
    assert len(served) == 3 and min(served.values()) >= 10, served
    assert set(states) == set(served) and all(state == CLEAN for state in states.values()), states


# PgBouncer (transaction mode) breaks whatever outlives a transaction on the server connection.
SESSION_SQL = [
    ("session-level advisory lock (use pg_advisory_xact_lock)",
     re.compile(r"\bpg_(try_)?advisory_(lock|unlock)(_shared|_all)?\s*\(", re.I)),
    ("LISTEN (a channel belongs to a session)", re.compile(r"(^|;)\s*(UN)?LISTEN\s+[\w\"*]", re.I)),
    ("SET without LOCAL (persists in the session after commit)",
     re.compile(r"(^|;)\s*(RESET\s+\w|SET\s+(SESSION\s+)?(?!LOCAL\b)[\w.]+\s*(=|TO\b))", re.I)),
    ("set_config(..., false) (session-wide)", re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.I)),
    ("SQL-level PREPARE/DEALLOCATE (a prepared statement belongs to a session)",
     re.compile(r"(^|;)\s*(PREPARE\s+\w+\s*(\(|AS\b)|DEALLOCATE\b)", re.I)),
    ("cursor WITH HOLD (outlives the transaction)", re.compile(r"\bWITH\s+HOLD\b", re.I)),
    ("session settings via SET SESSION AUTHORIZATION/ROLE", re.compile(r"(^|;)\s*SET\s+(ROLE|SESSION\s+AUTH)", re.I)),
]
TEMP_TABLE = re.compile(r"CREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\s+TABLE\b", re.I)


def _sql_findings(text: str) -> list[str]:
    found = [name for name, pattern in SESSION_SQL if pattern.search(text)]
    for statement in text.split(";"):
        if TEMP_TABLE.search(statement) and not re.search(r"ON\s+COMMIT\s+DROP", statement, re.I):
            found.append("CREATE TEMP TABLE without ON COMMIT DROP (stays in the session)")
    return found


def _python_strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal that is not a docstring/bare expression; f-strings with {} holes."""
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    bare |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if id(node) in bare:
            continue
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def pgbouncer_findings(path: Path, text: str) -> list[str]:
    """What in one source file (.py or .sql) relies on session state."""
    if path.suffix == ".sql":
        stripped = re.sub(r"--[^\n]*", "", text)
        return [f"{path}: {what}" for what in _sql_findings(stripped)]
    tree = ast.parse(text)
    out = [f"{path}:{line}: {what}" for line, s in _python_strings(tree) for what in _sql_findings(s)]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if path.name != "connection.py" and re.search(r"(^|\.)(psycopg\.connect|Connection\.connect|"
                                                      r"ConnectionPool|AsyncConnectionPool)$", name):
            out.append(f"{path}:{node.lineno}: {name}() outside db/connection.py"
                       " (bypasses prepare_threshold=None)")
        for kw in node.keywords:
            value = ast.unparse(kw.value)
            if kw.arg == "prepare" and value != "False" or kw.arg == "prepare_threshold" and value != "None":
                out.append(f"{path}:{node.lineno}: {kw.arg}={value} (server-side prepared statement)")
            if kw.arg == "withhold" and value != "False":
                out.append(f"{path}:{node.lineno}: withhold cursor (outlives the transaction)")
    return out


def test_the_pgbouncer_scanner_flags_each_session_level_construct(tmp_path: Path) -> None:
    bad = {
        "lock.py": 'conn.execute("SELECT pg_advisory_lock(%s)", (1,))',
        "trylock.py": 'conn.execute(f"SELECT pg_try_advisory_lock({key})")',
        "listen.py": 'conn.execute("LISTEN qbsync_changes")',
        "set.py": 'conn.execute("SET statement_timeout = 5000")',
        "setsession.py": 'conn.execute("SET SESSION lock_timeout TO \'1s\'")',
        "setconfig.py": "conn.execute(\"SELECT set_config('work_mem', '8MB', false)\")",
        "temp.py": 'conn.execute("CREATE TEMP TABLE stage (id text)")',
        "ftemp.py": 'conn.execute(f"CREATE TEMPORARY TABLE {name} (id text) ON COMMIT DELETE ROWS")',
        "prepare.py": 'conn.execute("SELECT 1", prepare=True)',
        "threshold.py": 'psycopg.connect(url, prepare_threshold=5)',
        "connect.py": 'import psycopg\nconn = psycopg.connect(url)',
        "hold.py": 'conn.cursor("c", withhold=True)',
        "0009_x.sql": "SET search_path = quickbooks;\nCREATE TABLE t (id int);",
    }
    for name, source in bad.items():
        path = tmp_path / name
        path.write_text(source)
        assert pgbouncer_findings(path, path.read_text()), f"{name} should be flagged"
    good = {
        "ok.py": '"""Set `deleted_at` for rows."""\nconn.execute("SET LOCAL lock_timeout = \'120s\'")\n'
                 'conn.execute("SELECT pg_advisory_xact_lock(%s)", (1,))\n'
                 'conn.execute("CREATE TEMP TABLE IF NOT EXISTS s (id text) ON COMMIT DROP")\n'
                 'conn.execute("UPDATE t SET a = 1")\nlog.info("listening on %s", url)',
    }
    for name, source in good.items():
        path = tmp_path / name
        path.write_text(source)
        assert pgbouncer_findings(path, path.read_text()) == []


def test_no_session_level_sql_in_services_db_or_tui() -> None:
    findings = []
    for folder in ("services", "db", "tui"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
                findings += pgbouncer_findings(path.relative_to(ROOT), path.read_text(encoding="utf-8"))
    assert findings == []


# -- 4. the database goes away under running workers ---------------------------------------------

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d [+-]\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    return bool(wait_for(check, timeout, interval=0.3, ignore=(psycopg.Error, DatabaseUnavailable)))


@pytest.mark.slow
def test_workers_survive_the_database_going_away_and_resume(qbsync_env: dict[str, str], emulator,
                                                            tmp_path: Path) -> None:
    from services.core.config import load_settings
    from services.emulator import EMULATOR_CLIENT_SECRET
    from services.sync.engine import enqueue_sync_request

    with ExitStack() as stack:
        server = stack.enter_context(dedicated_server())
        url = server.url()
        with psycopg.connect(url) as conn:
            upgrade(conn)
        env = {**qbsync_env, "DATABASE_URL": url}
        settings = load_settings(env, dotenv=False)
        db = Database(url, max_size=2, timeout=3)
        stack.callback(db.close)
        realm = connect_realm(db, settings, emulator, customers=15, items=5, invoices=12, estimates=3)

        procs: dict[str, subprocess.Popen] = {}
        logs: dict[str, tuple[Path, Path]] = {}
        for name in ("tokenup", "sync"):
            out, err = tmp_path / f"{name}.out.log", tmp_path / f"{name}.err.log"
            logs[name] = (out, err)
            with open(out, "w") as out_file, open(err, "w") as err_file:
                procs[name] = subprocess.Popen([*QBSYNC, name], env=env, cwd=tmp_path, stdout=out_file,
                                               stderr=err_file)

        def stop_all() -> None:
            for proc in procs.values():
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        stack.callback(stop_all)

        assert _wait(lambda: realm_synced(db, realm), 60), "the sync worker did not run its first sync"

        with db.transaction() as conn:  # where the quiet sync worker listens for wake-ups
            (wake_at,) = conn.execute("SELECT wake_host, wake_port FROM quickbooks.sync_workers").fetchall()
        logged = {name: err.stat().st_size for name, (_, err) in logs.items()}
        server.stop()
        # tokenup looks every TOKEN_CHECK_INTERVAL_SECONDS (1 s here); the idle sync worker sleeps
        # until woken, as by a webhook the receiver stored: it then finds the database gone
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (wake_at[0], wake_at[1]))

        def both_failed_once() -> bool:  # both workers try (and fail) at least once meanwhile
            return all("database unavailable" in err.read_bytes()[logged[name]:].decode(errors="replace")
                       for name, (_, err) in logs.items())
        wait_for(both_failed_once, 60, "both workers to log the outage")
        assert all(proc.poll() is None for proc in procs.values()), "a worker died with the database"
        server.start()

        # sync resumes: a requested run completes
        with db.transaction() as conn:
            request_id = enqueue_sync_request(conn, realm, "Customer", full=True, requested_by="test")
        assert _wait(lambda: request_status(db, request_id) == "done", 60), "the sync worker did not resume"

        # tokenup resumes: a token that falls due is refreshed
        with db.transaction() as conn:
            before = conn.execute("SELECT last_refreshed_at FROM quickbooks.tokens WHERE realm_id = %s",
                                  (realm,)).fetchone()[0]
            conn.execute("UPDATE quickbooks.tokens SET expires_at = now() + interval '1 minute'"
                         " WHERE realm_id = %s", (realm,))

        def refreshed() -> bool:
            with db.transaction() as conn:
                after = conn.execute("SELECT last_refreshed_at FROM quickbooks.tokens WHERE realm_id = %s",
                                     (realm,)).fetchone()[0]
            return after is not None and (before is None or after > before)
        assert _wait(refreshed, 60), "tokenup did not resume"
        assert all(proc.poll() is None for proc in procs.values())

        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        assert {name: proc.wait(timeout=60) for name, proc in procs.items()} == {"tokenup": 0, "sync": 0}

        with db.transaction() as conn:
            tokens = conn.execute("SELECT access_token, refresh_token FROM quickbooks.tokens").fetchone()
        secrets = [EMULATOR_CLIENT_SECRET, *tokens]
        for name, (out, err) in logs.items():
            text = out.read_text() + err.read_text()
            assert "Traceback" not in text, f"{name}:\n{text}"
            assert not [s for s in secrets if s and s in text], name
            for line in text.splitlines():
                assert TIMESTAMPED.match(line), f"{name}: not a one-line log record: {line!r}"
            assert "database unavailable" in err.read_text(), f"{name} did not report the outage"
