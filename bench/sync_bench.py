"""Sync benchmark: full sync of a large emulator company into PostgreSQL, three ways.

    .venv/bin/python bench/sync_bench.py [--invoices 100000] [--estimates 20000]
        [--customers 10000] [--items 1000] [--naive-invoices 10000] [--latency-ms 300]
        [--skip-fast] [--skip-naive] [--skip-latency] [--profile] [--micro]

1. fast: `qbsync sync --once` in a subprocess (emulator at zero latency, in this process):
   wall time, invoices/s (the Invoice run's own duration from sync_runs, and the whole sync
   end to end), peak RSS of the sync process (os.wait4 rusage), API calls.
2. naive: the same data through a naive loader (pages fetched one after another, one
   upsert + one commit per invoice, lines in the same per-row transaction) on the first
   --naive-invoices invoices, extrapolated per row to the full count (said in the output).
2b. remote: 1 and 2 again with PostgreSQL behind a TCP proxy on 127.0.0.1 that delays every
   byte by --proxy-delay-ms per direction (production is Neon over a network); the naive
   loader on --naive-remote-invoices.
3. latency: the emulator answers every request after --latency-ms, QBO_MAX_REQUESTS_PER_MINUTE=450:
   total time against the floor the rate limit and concurrency impose:
   R = minimal requests (one per 1,000 rows per entity + CompanyInfo), C = QBO_MAX_CONCURRENCY,
   floor = max(ceil(R / C) * latency, floor((R - 1) / limit) * 60 s).
PostgreSQL is an embedded server (pgserver) in a temporary directory unless BENCH_DATABASE_URL
is set. Every database is checked for exact row counts after each run.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from db.connection import Database  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET  # noqa: E402
from services.emulator.server import EmulatorServer  # noqa: E402


class DelayProxy:
    """TCP on 127.0.0.1 → the PostgreSQL server, adding a fixed delay to each direction.

    A stand-in for a network database (Neon): every byte arrives `delay_s` after it was sent,
    in both directions, without limiting throughput (chunks are time-stamped on receipt and
    released when due, so a round trip costs 2 * delay_s however much data flows)."""

    def __init__(self, target: tuple, delay_s: float) -> None:
        import socket
        import threading

        self.target, self.delay_s = target, delay_s  # target: ("unix", path) or ("tcp", (host, port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _upstream(self):  # noqa: ANN202
        import socket

        kind, where = self.target
        sock = socket.socket(socket.AF_UNIX if kind == "unix" else socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(where)
        return sock

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream = self._upstream()
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:  # noqa: ANN001
        import queue
        import socket
        import threading

        chunks: queue.SimpleQueue = queue.SimpleQueue()

        def sender() -> None:
            while True:
                due, data = chunks.get()
                if data is None:
                    break
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                try:
                    dst.sendall(data)
                except OSError:
                    break
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        threading.Thread(target=sender, daemon=True).start()
        while True:
            try:
                data = src.recv(262144)
            except OSError:
                data = b""
            chunks.put((time.perf_counter() + self.delay_s, data or None))
            if not data:
                return

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()


class Postgres:
    def __init__(self) -> None:
        self.external = os.environ.get("BENCH_DATABASE_URL")
        self.dir = None
        if self.external:
            self.admin_url = self.external
            return
        import pgserver

        self.dir = Path(tempfile.mkdtemp(prefix="qbsbench"))
        self._server = pgserver.get_server(self.dir / "pg", cleanup_mode=None)
        self.admin_url = self._server.get_uri()

    def fresh(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        with psycopg.connect(url) as conn:
            upgrade(conn)
        return url

    def url(self, name: str) -> str:
        if self.external:
            from urllib.parse import urlsplit, urlunsplit

            parts = urlsplit(self.external)
            return urlunsplit(parts._replace(path="/" + name))
        return self._server.get_uri(name)

    def upstream(self) -> tuple:
        """Where a TCP proxy should connect: the embedded server's unix socket."""
        info = self._server.get_postmaster_info()
        return ("unix", str(Path(info.socket_dir) / f".s.PGSQL.{info.port}"))

    def stop(self) -> None:
        if self.dir is not None:
            from db.embedded import stop_embedded

            stop_embedded(self.dir / "pg")
            shutil.rmtree(self.dir, ignore_errors=True)


def env_for(database_url: str, emulator: EmulatorServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL"))}
    env.update({
        "DATABASE_URL": database_url, "QBO_CLIENT_ID": EMULATOR_CLIENT_ID,
        "QBO_CLIENT_SECRET": EMULATOR_CLIENT_SECRET, "QBO_API_BASE_URL": emulator.url,
        "QBO_TOKEN_URL": f"{emulator.url}/oauth2/v1/tokens/bearer", "QBO_RETRY_BASE_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO",
    })
    for key in ("MALLOC_ARENA_MAX", "PYTHONMALLOC", "MALLOC_MMAP_THRESHOLD_"):
        if os.environ.get("BENCH_" + key):
            env[key] = os.environ["BENCH_" + key]
    env.update(extra)
    return env


def store_tokens(database_url: str, env: dict[str, str], emulator: EmulatorServer, realm: str) -> None:
    from services.core.config import load_settings
    from services.tokens.vault import add_tokens

    settings = load_settings(env, dotenv=False)
    issued = emulator.state.issue_tokens(realm)
    db = Database(database_url, max_size=2)
    try:
        add_tokens(db, settings, realm, issued["refresh_token"], access_token=issued["access_token"],
                   expires_in=3600)
    finally:
        db.close()


def run_sync(env: dict[str, str], realm: str, profile: Path | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, output) of `qbsync sync --once` in a subprocess.

    Peak RSS is the sync process's own VmHWM read at its exit (os.wait4's ru_maxrss keeps
    the high-water mark from before exec, when the forked child still shared this
    process's ~350 MB emulator pages)."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
        cmd += ["-m", "services.cli"]
    else:
        # VmHWM of the process itself: ru_maxrss from wait4 would also count the pages the
        # child shared with this (emulator-holding) process between fork and exec.
        cmd += ["-c", "import sys; from services.cli import main; code = main(sys.argv[1:]); "
                "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]; "
                "print('peak-rss-kb', hwm); sys.exit(code)"]
    cmd += ["sync", "--once", "--realm-id", realm]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if os.environ.get("BENCH_RSS_TRACE"):
        import threading

        def trace() -> None:
            while proc.poll() is None:
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    print("rss", status.split("VmRSS:")[1].split()[0], status.split("VmHWM:")[1].split()[0], flush=True)
                except (OSError, IndexError):
                    return
                time.sleep(float(os.environ["BENCH_RSS_TRACE"]))
        threading.Thread(target=trace, daemon=True).start()
    out = proc.stdout.read() if proc.stdout else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    peak_kb = next((int(line.split()[1]) for line in out.splitlines() if line.startswith("peak-rss-kb")),
                   usage.ru_maxrss)
    if proc.returncode != 0:
        print(out)
        raise SystemExit(f"sync exited {proc.returncode}")
    out += f"\nsync-process-cpu-s {usage.ru_utime + usage.ru_stime:.2f}\n"
    return elapsed, peak_kb // 1024, out


def runs(database_url: str, realm: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT entity, rows_fetched, rows_upserted, api_calls,"
            " extract(epoch FROM finished_at - started_at) FROM quickbooks.sync_runs"
            " WHERE realm_id = %s ORDER BY id", (realm,)).fetchall()


def check_counts(database_url: str, realm: str, expected: dict[str, int]) -> None:
    with psycopg.connect(database_url) as conn:
        for table, n in expected.items():
            got = conn.execute(f"SELECT count(*) FROM quickbooks.{table} WHERE realm_id = %s AND deleted_at IS NULL",
                               (realm,)).fetchone()[0]
            if got != n:
                raise SystemExit(f"{table}: {got} rows, expected {n}")


def naive_load(database_url: str, env: dict[str, str], realm: str, limit: int) -> tuple[float, int]:
    """Pages one after another; per invoice: upsert the row, replace its lines, commit."""
    from db.upserts import dump_raw
    from services.core.config import load_settings
    from services.model.entities import ENTITIES
    from services.tokens.vault import client_for

    spec = ENTITIES["Invoice"]
    settings = load_settings(env, dotenv=False)
    cols = [c.name for c in spec.columns]
    upsert = (f"INSERT INTO quickbooks.invoices (realm_id, id, {', '.join(cols)}, raw) VALUES"
              f" (%s, %s, {', '.join(['%s'] * len(cols))}, %s::jsonb) ON CONFLICT (realm_id, id) DO UPDATE SET "
              + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols) + ", raw = EXCLUDED.raw, synced_at = now()")
    lcols = [c.name for c in spec.line.columns]
    line_sql = (f"INSERT INTO quickbooks.invoice_line_items (realm_id, invoice_id, position, {', '.join(lcols)})"
                f" VALUES (%s, %s, %s, {', '.join(['%s'] * len(lcols))})")
    db = Database(database_url, max_size=2)
    client = client_for(db, settings, realm)
    done = 0
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        for page in client.query_pages("Invoice"):
            for obj in page.objects:
                conn.execute(upsert, (realm, obj["Id"], *spec.row(obj), dump_raw(obj)))
                conn.execute("DELETE FROM quickbooks.invoice_line_items WHERE realm_id = %s AND invoice_id = %s",
                             (realm, obj["Id"]))
                for position, line in enumerate(obj.get("Line", [])):
                    conn.execute(line_sql, (realm, obj["Id"], position, *[c.extract(line) for c in spec.line.columns]))
                conn.commit()
                done += 1
                if done >= limit:
                    break
            if done >= limit:
                break
    elapsed = time.perf_counter() - started
    client.close()
    db.close()
    return elapsed, done


def postgres_cpu_s(pg: Postgres) -> float:
    """CPU seconds used so far by the embedded server's processes (postmaster's children
    included once they exited, live backends read from /proc); -1 when not measurable."""
    if pg.external:
        return -1.0
    tick = os.sysconf("SC_CLK_TCK")
    pid = int((pg.dir / "pg" / "postmaster.pid").read_text().split()[0])
    total = 0.0
    pids = [pid] + [int(p) for p in (Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime stime cutime cstime (fields 14-17; after the ')' they are at 11..14)
        total += sum(int(v) for v in fields[11:15 if each == pid else 13]) / tick
    return total


def fast(args: argparse.Namespace, pg: Postgres, emulator: EmulatorServer, realm: str,
         expected: dict[str, int], total_objects: int) -> tuple[float, float]:
    """Scenario 1; returns (invoices/s of the Invoice run, wall seconds of the whole sync)."""
    url = pg.fresh("bench_fast")
    env = env_for(url, emulator, QBO_MAX_CONCURRENCY=str(args.concurrency))
    store_tokens(url, env, emulator, realm)
    emulator.state.reset_counts()
    profile = ROOT / "bench" / "sync.prof" if args.profile else None
    pg_cpu_before = postgres_cpu_s(pg)
    elapsed, rss, out = run_sync(env, realm, profile)
    pg_cpu = postgres_cpu_s(pg) - pg_cpu_before
    sync_cpu = float(out.rsplit("sync-process-cpu-s ", 1)[1].split()[0])
    check_counts(url, realm, expected)
    per = runs(url, realm)
    calls = sum(r[3] for r in per)
    inv = next(r for r in per if r[0] == "Invoice")
    print(f"\nfast sync (zero latency, QBO_MAX_CONCURRENCY={args.concurrency}):")
    for entity, fetched, upserted, api, secs in per:
        print(f"  {entity:<12} {fetched:>7} fetched {upserted:>7} upserted {api:>4} calls {float(secs):7.2f} s")
    print(f"  total {elapsed:.2f} s wall for {total_objects} objects ({total_objects / elapsed:,.0f} objects/s),"
          f" {calls} API calls, peak RSS {rss} MB")
    if pg_cpu >= 0:
        print(f"  CPU: sync process {sync_cpu:.2f} s, PostgreSQL (all server processes) {pg_cpu:.2f} s,"
              f" over {elapsed:.2f} s wall on {os.cpu_count()} cores")
    fast_inv_rate = args.invoices / float(inv[4])
    print(f"  invoices: {fast_inv_rate:,.0f}/s (Invoice run), {args.invoices / elapsed:,.0f}/s"
          f" (100k invoices / whole sync incl. process start and the other entities)")

    return fast_inv_rate, elapsed


def remote(args: argparse.Namespace, pg: Postgres, emulator: EmulatorServer, realm: str,
           expected: dict[str, int]) -> None:
    """Scenario 2b: the fast sync and the naive loader with PostgreSQL behind DelayProxy."""
    proxy = DelayProxy(pg.upstream(), args.proxy_delay_ms / 1000)
    try:
        pg.fresh("bench_remote")
        url = proxy.url("bench_remote")
        with psycopg.connect(url) as conn:  # what one round trip costs through the proxy
            started = time.perf_counter()
            for _ in range(20):
                conn.execute("SELECT 1").fetchone()
            rtt_ms = (time.perf_counter() - started) / 20 * 1000
        env = env_for(url, emulator, QBO_MAX_CONCURRENCY=str(args.concurrency))
        store_tokens(url, env, emulator, realm)
        elapsed, rss, _ = run_sync(env, realm)
        check_counts(url, realm, expected)
        inv = next(r for r in runs(url, realm) if r[0] == "Invoice")
        fast_rate = args.invoices / float(inv[4])
        print(f"\nremote database (TCP proxy, +{args.proxy_delay_ms} ms per direction, measured round trip"
              f" {rtt_ms:.2f} ms):")
        print(f"  fast sync: {elapsed:.2f} s wall, invoices {fast_rate:,.0f}/s (Invoice run),"
              f" {args.invoices / elapsed:,.0f}/s (whole sync), peak RSS {rss} MB")
        pg.fresh("bench_naive_remote")
        nurl = proxy.url("bench_naive_remote")
        nenv = env_for(nurl, emulator)
        store_tokens(nurl, nenv, emulator, realm)
        n_elapsed, n_done = naive_load(nurl, nenv, realm, args.naive_remote_invoices)
        naive_rate = n_done / n_elapsed
        print(f"  naive loader: {n_done} invoices in {n_elapsed:.2f} s = {naive_rate:,.0f} invoices/s"
              f" (extrapolated per row to {args.invoices}: {args.invoices / naive_rate:.0f} s)")
        print(f"  speed-up: {fast_rate / naive_rate:.1f}x (Invoice run), "
              f"{(args.invoices / elapsed) / naive_rate:.1f}x (whole sync end to end vs naive invoices only)")
    finally:
        proxy.stop()


def micro(pg: Postgres, emulator: EmulatorServer, realm: str, n: int = 5000) -> None:
    """Where one invoice's time goes, in-process on one connection: the sync process's work on a
    served page (envelope + Fault check; no object parse), PostgreSQL's single page statement
    (parse, split, upsert, lines), and for comparison the earlier path (Decimal parse in
    Python, raw dump, COPY of per-object text)."""
    import json
    from decimal import Decimal

    import db.upserts as upserts
    from services.intuit.client import _RAW_HEAD, _RAW_TAIL
    from services.model.entities import ENTITIES

    spec = ENTITIES["Invoice"]
    bodies = [emulator.state.query(realm, f"SELECT * FROM Invoice ORDERBY Id STARTPOSITION {s} MAXRESULTS 1000")[1]
              for s in range(1, n, 1000)]
    count = len(bodies) * 1000
    us = lambda seconds: seconds / count * 1e6  # noqa: E731
    started = time.perf_counter()
    for body in bodies:  # what QBOClient.query_page does with a body
        assert b'"Fault"' not in body and _RAW_HEAD.match(body, 0, 256)
        assert _RAW_TAIL.match(body, body.rfind(b"]") + 1)
    envelope = time.perf_counter() - started
    results: dict[str, float] = {}
    for label in ("page", "objects"):
        url = pg.fresh("bench_micro")
        with psycopg.connect(url, prepare_threshold=None) as conn:
            started = time.perf_counter()
            cpu = time.process_time()
            for body in bodies:
                with conn.transaction():
                    if label == "page":
                        upserts.upsert_page(conn, spec, realm, body, "Invoice")
                    else:
                        objects = json.loads(body, parse_float=Decimal)["QueryResponse"]["Invoice"]
                        upserts.upsert_objects(conn, spec, realm, upserts.prepare_batch(objects))
            results[label] = time.perf_counter() - started
            results[label + "-cpu"] = time.process_time() - cpu
    print(f"\nper invoice ({count} invoices, one connection, in-process):")
    print(f"  sync process: envelope + Fault check of the served page     {us(envelope):6.1f} us")
    print(f"  page path (upsert_page): wall {us(results['page']):6.1f} us, of it Python"
          f" {us(results['page-cpu']):5.1f} us, PostgreSQL the rest")
    print(f"  earlier path (Decimal parse + dump + COPY + upsert_objects): wall {us(results['objects']):6.1f} us,"
          f" of it Python {us(results['objects-cpu']):5.1f} us")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--estimates", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--naive-invoices", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-fast", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-remote", action="store_true", help="skip the database-over-a-delayed-TCP-proxy runs")
    parser.add_argument("--proxy-delay-ms", type=float, default=0.5, help="added per direction by the proxy")
    parser.add_argument("--naive-remote-invoices", type=int, default=2_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the fast sync into bench/sync.prof")
    parser.add_argument("--micro", action="store_true", help="per-invoice cost of each step, in-process")
    args = parser.parse_args()

    pg = Postgres()
    emulator = EmulatorServer(rate_limit_per_minute=500)
    emulator.start()
    try:
        started = time.perf_counter()
        realm = emulator.state.create_realm(customers=args.customers, items=args.items, invoices=args.invoices,
                                            estimates=args.estimates, seed=1)
        print(f"emulator company: {args.invoices} invoices, {args.estimates} estimates, {args.customers} customers,"
              f" {args.items} items generated in {time.perf_counter() - started:.1f} s")
        expected = {"invoices": args.invoices, "estimates": args.estimates, "customers": args.customers,
                    "items": args.items}
        total_objects = sum(expected.values())

        if args.micro:
            micro(pg, emulator, realm)
        fast_inv_rate = elapsed = 0.0
        # 1. fast
        if not args.skip_fast:
            fast_inv_rate, elapsed = fast(args, pg, emulator, realm, expected, total_objects)

        # 2. naive
        if not args.skip_naive:
            nurl = pg.fresh("bench_naive")
            nenv = env_for(nurl, emulator)
            store_tokens(nurl, nenv, emulator, realm)
            n_elapsed, n_done = naive_load(nurl, nenv, realm, args.naive_invoices)
            naive_rate = n_done / n_elapsed
            print(f"\nnaive loader: {n_done} invoices in {n_elapsed:.2f} s = {naive_rate:,.0f} invoices/s"
                  f" (a {n_done}-invoice subset; extrapolated per row to {args.invoices}:"
                  f" {args.invoices / naive_rate:.0f} s)")
            if elapsed:
                print(f"  speed-up: {fast_inv_rate / naive_rate:.1f}x (Invoice run), "
                      f"{(args.invoices / elapsed) / naive_rate:.1f}x (whole sync end to end vs naive invoices only)")

        # 2b. the database behind a TCP proxy adding a delay per direction (a network database)
        if not args.skip_remote and pg.external:
            print("\nremote: skipped (BENCH_DATABASE_URL is set; the proxy fronts the embedded server)")
        elif not args.skip_remote:
            remote(args, pg, emulator, realm, expected)

        # 3. latency
        if not args.skip_latency:
            lurl = pg.fresh("bench_latency")
            lenv = env_for(lurl, emulator, QBO_MAX_REQUESTS_PER_MINUTE="450",
                           QBO_MAX_CONCURRENCY=str(args.concurrency))
            store_tokens(lurl, lenv, emulator, realm)
            emulator.state.configure(latency_ms=args.latency_ms)
            emulator.state.reset_counts()
            l_elapsed, l_rss, _ = run_sync(lenv, realm)
            emulator.state.configure(latency_ms=0)
            check_counts(lurl, realm, expected)
            l_runs = runs(lurl, realm)
            l_calls = sum(r[3] for r in l_runs)
            minimal = 1 + sum(max(1, math.ceil(n / 1000)) for n in expected.values())
            lat = args.latency_ms / 1000
            conc_floor = math.ceil(minimal / args.concurrency) * lat
            rate_floor = ((minimal - 1) // 450) * 60.0
            floor = max(conc_floor, rate_floor)
            print(f"\nlatency {args.latency_ms} ms, QBO_MAX_REQUESTS_PER_MINUTE=450, QBO_MAX_CONCURRENCY={args.concurrency}:")
            print(f"  minimal requests R = {minimal}; floor = max(ceil(R/C)*latency = {conc_floor:.2f} s,"
                  f" rate {rate_floor:.0f} s) = {floor:.2f} s")
            for entity, _f, _u, api, secs in l_runs:
                print(f"  {entity:<12} {api:>4} calls {float(secs):7.2f} s")
            print(f"  measured {l_elapsed:.2f} s ({l_calls} API calls, peak RSS {l_rss} MB):"
                  f" {l_elapsed / floor:.2f}x the floor")
    finally:
        emulator.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
