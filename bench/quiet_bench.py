"""Quiet-hour benchmark (issue: a measured quiet hour, SPEC section 13): the three workers idle.

    .venv/bin/python bench/quiet_bench.py [--minutes 6.5] [--realms 3] [--deliveries 20]
        [--spacing 15-20] [--log-dir DIR] [--markdown FILE]

1. A throw-away embedded PostgreSQL, the emulator in this process, --realms small companies
   with fresh tokens (3600 s), then `qbsync tokenup`, `qbsync sync` and `qbsync webhook` as real
   subprocesses with the DEFAULT intervals (TOKEN_CHECK_INTERVAL_SECONDS, SYNC_INTERVAL_MINUTES,
   SYNC_CONCURRENCY, RECONCILE_INTERVAL_HOURS unset; WEBHOOK_PORT a free port).
2. Ready: every realm synced (every entity's last run successful), reconciled (rows in
   quickbooks.reconciliations), no lease held, the receiver's /healthz answered, tokenup's start
   logged. The bench then closes its own connection to the measured database and waits --settle
   seconds (PostgreSQL flushes a backend's statistics up to 10 s after its last transaction).
3. The idle window (--minutes): every second, from a connection to the `postgres` database (so
   its own queries are not counted in the measured database's statistics), pg_stat_activity of
   the measured database and its pg_stat_database xact_commit + xact_rollback. A change of a
   backend's query_start (or a new backend) is activity; a worker's activity within
   ROUND_GAP_S of its previous activity is the same round of queries. Per worker: the rounds'
   times, the longest and shortest gap, rounds per 5 minutes (and the most in any 300 s); the
   database's transactions in the window (read --settle s after its end, for the flush delay).
   Target: at most one round per worker per five minutes.
4. --deliveries webhooks in that idle state, spaced --spacing seconds apart (the workers fall
   back asleep in between): the emulator updates a customer and delivers the signed CloudEvents
   webhook itself to the receiver; the delay runs from just before the mutation to the row in
   quickbooks.customers having the new SyncToken (polled every 20 ms). p50 / p95 / max.
   Target: p95 <= 5 s.
Every process is stopped by PID (SIGTERM, then SIGKILL) in finally blocks; the Markdown block of
results is printed (and written to --markdown).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import ROOT, Postgres, env_for, store_tokens

from services.emulator import EMULATOR_VERIFIER_TOKEN
from services.emulator.server import EmulatorServer
from services.model.entities import ENTITY_NAMES

QBSYNC = [sys.executable, "-m", "services.cli"]
WORKERS = ("tokenup", "sync", "webhook")
SHAPE = {"customers": 12, "items": 4, "invoices": 10, "estimates": 3}
ROUND_GAP_S = 3.0
DEFAULTED = ("TOKEN_CHECK_INTERVAL_SECONDS", "SYNC_INTERVAL_MINUTES", "SYNC_CONCURRENCY", "RECONCILE_INTERVAL_HOURS",
             "SYNC_LEASE_SECONDS", "SYNC_WAKE_PORT", "SYNC_WAKE_HOST", "METRICS_PORT", "TOKEN_REFRESH_MARGIN_MINUTES",
             "LOG_LEVEL")


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return (f"nproc {os.cpu_count()}, {model}, {mem_kb / 1024 / 1024:.1f} GiB RAM, Linux {platform.release()},"
            f" Python {platform.python_version()}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5, procs: dict | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except (requests.RequestException, OSError):
            got = None
        if got:
            return got
        for name, p in (procs or {}).items():
            if p.poll() is not None:
                raise SystemExit(f"{name} exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Watcher(threading.Thread):
    """Samples the measured database's backends and transaction counter every `every` s from a
    connection to another database. Activity events: (database time, worker, pid, query text)."""

    def __init__(self, url: str, datname: str, every: float = 1.0) -> None:
        super().__init__(daemon=True, name="watcher")
        self.url, self.datname, self.every = url, datname, every
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.events: list[tuple[dt.datetime, str, int, str]] = []
        self.others: list[tuple[dt.datetime, str, str]] = []   # backends of the database that are not qbsync's
        self.xacts: list[tuple[dt.datetime, int]] = []
        self.backends: dict[str, set[int]] = {}
        self._seen: dict[int, Any] = {}
        self._other_seen: dict[int, Any] = {}

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopped.is_set():
                try:
                    now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                    rows = conn.execute(
                        "SELECT pid, application_name, backend_type, query_start, backend_start, left(query, 120)"
                        " FROM pg_stat_activity WHERE datname = %s", (self.datname,)).fetchall()
                    xact = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                        (self.datname,)).fetchone()[0]
                except psycopg.Error:
                    return
                with self.lock:
                    self.xacts.append((now, int(xact)))
                    for pid, app, btype, qstart, bstart, query in rows:
                        if app and app.startswith("qbsync-"):
                            worker = app[len("qbsync-"):]
                            self.backends.setdefault(worker, set()).add(pid)
                            mark = (qstart, bstart)
                            if self._seen.get(pid) != mark:
                                self._seen[pid] = mark
                                self.events.append((qstart or bstart, worker, pid, " ".join((query or "").split())))
                        else:
                            mark = (qstart, bstart)
                            if self._other_seen.get(pid) != mark:
                                self._other_seen[pid] = mark
                                self.others.append((qstart or bstart or now, f"{btype}/{app or '-'}",
                                                    " ".join((query or "").split())[:60]))
                self.stopped.wait(self.every)

    def xact_at(self, when: dt.datetime) -> int:
        """The counter at the first sample at or after `when`."""
        with self.lock:
            return next((x for t, x in self.xacts if t >= when), self.xacts[-1][1])

    def rounds(self, worker: str, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime, list[str]]]:
        with self.lock:
            events = sorted((t, q) for t, w, _pid, q in self.events if w == worker and start <= t < end)
        out: list[tuple[dt.datetime, dt.datetime, list[str]]] = []
        for t, q in events:
            if out and (t - out[-1][1]).total_seconds() <= ROUND_GAP_S:
                out[-1] = (out[-1][0], t, out[-1][2] + [q])
            else:
                out.append((t, t, [q]))
        return out


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
    return ordered[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.5, help="length of the idle window")
    parser.add_argument("--realms", type=int, default=3)
    parser.add_argument("--deliveries", type=int, default=20)
    parser.add_argument("--spacing", default="15-20", help="seconds between deliveries: A-B (uniform, seeded)")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds between ready and the window")
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    low, high = (float(x) for x in args.spacing.split("-"))
    if args.log_dir is None:
        import tempfile

        args.log_dir = Path(tempfile.mkdtemp(prefix="quietbench-logs"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; load {loadavg()}; logs in {args.log_dir}", flush=True)

    pg = Postgres()
    emulator = EmulatorServer(rate_limit_per_minute=500)
    emulator.start()
    procs: dict[str, subprocess.Popen] = {}
    watcher: Watcher | None = None
    try:
        datname = "quiet"
        url = pg.fresh(datname)
        port = free_port()
        env = env_for(url, emulator, QBO_WEBHOOK_VERIFIER_TOKEN=EMULATOR_VERIFIER_TOKEN, WEBHOOK_PORT=str(port))
        for key in DEFAULTED:
            env.pop(key, None)
        realms = [emulator.state.create_realm(**SHAPE) for _ in range(args.realms)]
        for realm in realms:
            store_tokens(url, env, emulator, realm)
        other_db = pg.url("postgres") if not pg.external else pg.external
        watcher = Watcher(other_db, datname)
        watcher.start()
        started = time.perf_counter()
        for name in WORKERS:
            with open(args.log_dir / f"{name}.log", "w") as out:
                procs[name] = subprocess.Popen([*QBSYNC, name], env=env, cwd=ROOT, stdout=out,
                                               stderr=subprocess.STDOUT)

        conn = psycopg.connect(url, autocommit=True)

        def ready() -> bool:
            synced = conn.execute(
                "SELECT count(*) FROM (SELECT realm_id FROM quickbooks.sync_state WHERE last_run_status = 'success'"
                " GROUP BY realm_id HAVING count(*) = %s) s", (len(ENTITY_NAMES),)).fetchone()[0]
            reconciled = conn.execute("SELECT count(DISTINCT realm_id) FROM quickbooks.reconciliations").fetchone()[0]
            leases = conn.execute("SELECT count(*) FROM quickbooks.realm_leases").fetchone()[0]
            return synced == len(realms) and reconciled == len(realms) and leases == 0

        wait_for(ready, 300, "the first sync and reconciliation of every realm", procs=procs)
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok, 60, "webhook /healthz",
                 procs=procs)
        wait_for(lambda: "tokenup started" in (args.log_dir / "tokenup.log").read_text(), 60, "tokenup's start",
                 procs=procs)
        ready_s = time.perf_counter() - started
        conn.close()  # the bench leaves the measured database alone during the window
        print(f"ready after {ready_s:.1f} s (every realm synced and reconciled); settling {args.settle:.0f} s,"
              f" then watching {args.minutes} min; load {loadavg()}", flush=True)
        time.sleep(args.settle)
        with psycopg.connect(other_db, autocommit=True) as admin:
            w_start = admin.execute("SELECT clock_timestamp()").fetchone()[0]
        load_start = loadavg()
        time.sleep(args.minutes * 60)
        with psycopg.connect(other_db, autocommit=True) as admin:
            w_end = admin.execute("SELECT clock_timestamp()").fetchone()[0]
        load_end = loadavg()
        time.sleep(args.settle)  # the backends' statistics of the window's last seconds are flushed by now
        with psycopg.connect(other_db, autocommit=True) as admin:
            x_end_time = admin.execute("SELECT clock_timestamp()").fetchone()[0]
        window_s = (w_end - w_start).total_seconds()
        xacts = watcher.xact_at(x_end_time) - watcher.xact_at(w_start)
        idle: dict[str, Any] = {}
        for name in WORKERS:
            rounds = watcher.rounds(name, w_start, w_end)
            times = [(r[0] - w_start).total_seconds() for r in rounds]
            edges = [0.0, *times, window_s]
            gaps = [b - a for a, b in zip(edges, edges[1:])]
            between = [b - a for a, b in zip(times, times[1:])]
            most = max((sum(1 for u in times if t <= u < t + 300) for t in times), default=0)
            idle[name] = {"rounds": rounds, "times": times, "longest": max(gaps),
                          "shortest": min(between) if between else None, "per5": len(rounds) / (window_s / 300),
                          "most300": most, "backends": len(watcher.backends.get(name, ()))}
        with watcher.lock:
            others = [(t, who, q) for t, who, q in watcher.others if w_start <= t < w_end]
        before = {name: len(watcher.rounds(name, w_start - dt.timedelta(seconds=args.settle + ready_s + 60), w_start))
                  for name in WORKERS}
        print(f"idle window {window_s:.0f} s: " + "; ".join(
            f"{n} {len(v['rounds'])} round(s) at {', '.join(f'{t:.0f}' for t in v['times']) or '-'} s"
            for n, v in idle.items()) + f"; {xacts} transactions in the database", flush=True)

        # ---- webhooks delivered in the idle state
        emulator.admin.configure(webhook_url=f"http://127.0.0.1:{port}/webhooks/quickbooks",
                                 webhook_format="cloudevents")
        customers = {r: [c["Id"] for c in emulator.admin.entities(r, "Customer")] for r in realms}
        rng = random.Random(1)
        poll = psycopg.connect(url, autocommit=True)
        delays: list[float] = []
        stages: list[tuple[float, float]] = []
        d_start = None
        try:
            for i in range(args.deliveries):
                if i:
                    time.sleep(rng.uniform(low, high))
                realm = realms[i % len(realms)]
                cid = customers[realm][(i // len(realms)) % len(customers[realm])]
                if d_start is None:
                    d_start = poll.execute("SELECT clock_timestamp()").fetchone()[0]
                t0 = time.perf_counter()
                db_t0 = dt.datetime.now(dt.timezone.utc)
                served = emulator.admin.mutate(realm, "Customer", "update", id=cid)
                token = served["SyncToken"]
                while True:
                    row = poll.execute("SELECT sync_token FROM quickbooks.customers WHERE realm_id = %s AND id = %s",
                                       (realm, cid)).fetchone()
                    if row and row[0] == token:
                        break
                    if time.perf_counter() - t0 > 60:
                        raise SystemExit(f"customer {cid} of {realm}: SyncToken {token} not in the table after 60 s")
                    time.sleep(0.02)
                delays.append(time.perf_counter() - t0)
                inbox = poll.execute(
                    "SELECT received_at, processed_at FROM quickbooks.webhook_inbox WHERE realm_id = %s"
                    " AND entity_id = %s ORDER BY id DESC LIMIT 1", (realm, cid)).fetchone()
                if inbox and inbox[0] and inbox[1]:
                    stages.append(((inbox[0] - db_t0).total_seconds(), (inbox[1] - inbox[0]).total_seconds()))
                print(f"delivery {i + 1}: {delays[-1] * 1000:.0f} ms", flush=True)
            d_end = poll.execute("SELECT clock_timestamp()").fetchone()[0]
            inbox_status = dict(poll.execute("SELECT status, count(*) FROM quickbooks.webhook_inbox GROUP BY status")
                                .fetchall())
        finally:
            poll.close()
        per_delivery = {n: len(watcher.rounds(n, d_start, d_end)) / max(1, args.deliveries) for n in WORKERS}
        codes = {}
        for name, p in procs.items():
            p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            try:
                codes[name] = p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = None
        procs.clear()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        if watcher is not None:
            watcher.stopped.set()
        emulator.stop()
        pg.stop()

    p50, p95, worst = percentile(delays, 50), percentile(delays, 95), max(delays)
    lines = [
        f"### Quiet hour: tokenup, sync, webhook idle for {window_s / 60:.1f} min, then {len(delays)} webhooks",
        "",
        f"Machine: {machine()}, PostgreSQL 16 (pgserver), {dt.date.today().isoformat()}; load average"
        f" {load_start} at the window's start, {load_end} at its end.",
        f"Setup: {args.realms} realms ({', '.join(f'{k} {v}' for k, v in SHAPE.items())}), default intervals"
        f" (TOKEN_CHECK_INTERVAL_SECONDS 300, SYNC_INTERVAL_MINUTES 60, IDLE_LOOK_S 300), ready (synced and"
        f" reconciled) after {ready_s:.1f} s, window from {args.settle:.0f} s after ready.",
        "",
        "| worker | backends seen | query rounds in the window (s from its start) | longest quiet stretch |"
        " shortest gap between rounds | rounds per 5 min | most rounds in any 300 s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in idle.items():
        ok = "met" if v["most300"] <= 1 else "**missed**"
        shortest = f"{v['shortest']:.0f} s" if v["shortest"] is not None else "—"
        lines.append(f"| qbsync-{name} | {v['backends']} | {', '.join(f'{t:.0f}' for t in v['times']) or 'none'} |"
                     f" {v['longest']:.0f} s | {shortest} | {v['per5']:.2f} | {v['most300']} | ≤ 1 per 5 min: {ok} |")
    lines += [
        "",
        f"Database transactions in the window (pg_stat_database xact_commit + xact_rollback of the measured database,"
        f" read from the `postgres` database, {window_s:.0f} s + {args.settle:.0f} s flush delay): **{xacts}**;"
        f" other backends of the database active in the window: {len(others)}"
        + (f" ({'; '.join(f'{w}: {q}' for _t, w, q in others[:5])})" if others else "") + ".",
        f"Rounds in the {args.settle:.0f} s + startup before the window: "
        + ", ".join(f"{n} {c}" for n, c in before.items()) + ".",
        "",
        "What each round ran (the last query text pg_stat_activity showed):",
    ]
    for name, v in idle.items():
        for start, _end, queries in v["rounds"]:
            shown = "; ".join(dict.fromkeys(q[:90] for q in queries))
            lines.append(f"- {name} at {(start - w_start).total_seconds():.0f} s: {shown}")
    lines += [
        "",
        f"| webhooks delivered in the idle state ({len(delays)}, {args.spacing} s apart) | target | measured |",
        "|---|---|---|",
        f"| mutation → row with the new SyncToken, p50 | — | {p50 * 1000:.0f} ms |",
        f"| same, p95 | ≤ 5 s | **{p95 * 1000:.0f} ms** ({'met' if p95 <= 5 else 'missed'}) |",
        f"| same, max | — | {worst * 1000:.0f} ms |",
    ]
    if stages:
        lines.append(f"| mutation → inbox row (received_at), median | — | {percentile([s[0] for s in stages], 50) * 1000:.0f} ms |")
        lines.append(f"| inbox row → processed_at, median / max | — | {percentile([s[1] for s in stages], 50) * 1000:.0f}"
                     f" / {max(s[1] for s in stages) * 1000:.0f} ms |")
    lines += [
        f"| query rounds per delivery (tokenup / sync / webhook) | — | "
        f"{per_delivery['tokenup']:.2f} / {per_delivery['sync']:.2f} / {per_delivery['webhook']:.2f} |",
        f"| inbox rows by status | all processed | {inbox_status} |",
        f"| exit codes after SIGTERM | 0 | {codes} |",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
