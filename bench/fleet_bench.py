"""Fleet benchmark (issue: many companies, SPEC section 13): sync processes sharing 2,000 small realms.

    .venv/bin/python bench/fleet_bench.py [--realms 2000] [--latency-ms 300] [--processes 1,2,4]
        [--concurrency 64] [--quick] [--max-connections 1000] [--py-spy DIR] [--log-dir DIR]

For each SYNC_CONCURRENCY in --concurrency (a comma list) and each process count in --processes:
1. a fresh database; every realm's tokens stored (fresh, 3600 s) and one fresh
   quickbooks.reconciliations row per realm, so the daily reconciliation the worker runs after a
   realm's scheduled sync is not due in the measured passes (RECONCILE_INTERVAL_HOURS=744 too;
   --with-reconcile measures with it instead);
2. N `qbsync sync` worker processes (real subprocesses, the environment bench/sync_bench.py's
   `env_for` builds; QBO_MAX_CONCURRENCY=4, QBO_MAX_REQUESTS_PER_MINUTE=450, the defaults);
3. the first full load: from the processes' start until every realm has every entity's last run
   successful and no lease is held; the wall time is the newest sync_runs.finished_at minus the
   database clock read just before the processes started;
4. the hourly pass: `UPDATE quickbooks.sync_state SET next_run_at = now()`, then an empty UDP
   datagram to every address in quickbooks.sync_workers (what the product does when work
   arrives); the wall time runs from that update's clock to the newest finished_at of a run
   started after it, once every realm has a successful run of each CDC entity after it;
5. checks: API calls per kind in total and per realm against a reference realm of the same shape
   synced alone (`sync --once`; the hourly pass: exactly one `cdc` call per realm and nothing
   else), one sync_runs row per (realm, entity) and phase, and Intuit's per-realm limits seen from
   the emulator (requests in flight per realm, requests started in any 60 s; the emulator itself
   allows 10 in flight, so a breach of QBO_MAX_CONCURRENCY=4 would not show as a 429) and from
   quickbooks.api_requests (the most overlapping [started_at, finished_at] per realm);
6. CPU (utime+stime from /proc/<pid>/stat, before SIGTERM) and peak RSS (VmHWM) per sync
   process, PostgreSQL's CPU (every server process), the bench process's CPU (the emulator's
   threads and the bench's own polling), and the machine's whole busy CPU (the rest is other
   jobs on the machine), per phase.

The emulator runs in this process (latency --latency-ms on every Data API call, 500 requests per
minute per realm as in the other benches); PostgreSQL is a throw-away embedded server (pgserver)
restarted with max_connections=--max-connections (its default 100 is below what the sync
processes' pools open at SYNC_CONCURRENCY >= 16; the peak number of qbsync backends is reported).
`--py-spy DIR` records the first sync process with py-spy (raw collapsed stacks, non-blocking)
for --py-spy-seconds of each phase. Every process the bench starts is stopped by PID in finally
blocks (SIGTERM, then SIGKILL after 60 s).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import ROOT, Postgres, env_for, postgres_cpu_s, run_sync

from db.connection import Database
from services.core.config import load_settings
from services.emulator.server import EmulatorServer
from services.model.entities import ENTITY_NAMES
from services.sync.worker import _LOOK, SCHEDULED

SHAPE = {"customers": 3, "items": 2, "invoices": 3, "estimates": 1}
DATA_KINDS = ("query", "cdc", "read", "companyinfo", "report")
QBSYNC = [sys.executable, "-m", "services.cli"]
TICK = os.sysconf("SC_CLK_TCK")
PER_REALM_CONCURRENCY = 4     # QBO_MAX_CONCURRENCY (the default)
PER_REALM_PER_MINUTE = 450    # QBO_MAX_REQUESTS_PER_MINUTE (the default)


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return {"nproc": str(os.cpu_count()), "cpu": model, "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version()}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) in MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan"), float("nan")
    return (int(status.split("VmHWM:")[1].split()[0]) / 1024, int(status.split("VmRSS:")[1].split()[0]) / 1024)


class ThreadSampler(threading.Thread):
    """Peak thread count (/proc/<pid>/status Threads) of each sync process, every second."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True, name="thread-sampler")
        self.pids = pids
        self.stopped = threading.Event()
        self.peak: dict[int, int] = {}

    def reset(self) -> None:
        self.peak = {}

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            for pid in self.pids:
                try:
                    n = int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])
                except (OSError, IndexError, ValueError):
                    continue
                self.peak[pid] = max(self.peak.get(pid, 0), n)


def xacts(admin_url: str, datname: str) -> int:
    """xact_commit + xact_rollback of `datname`, read from another database."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return int(conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                (datname,)).fetchone()[0])


def py_spy_dump(pid: int, out: Path) -> str:
    """One `py-spy dump` of the process: the thread count and the most common innermost frames."""
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        return "py-spy not installed"
    text = subprocess.run([str(exe), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=120).stdout
    out.write_text(text)
    tops: Counter[str] = Counter()
    threads = text.split("\nThread ")[1:]
    for block in threads:
        lines = block.splitlines()
        if len(lines) > 1:
            tops[lines[1].strip().split(" (")[0] + " (" + lines[1].strip().split(" (")[-1].split("/")[-1]] += 1
    return f"{len(threads)} threads; innermost frames: " + ", ".join(f"{k} {v}" for k, v in tops.most_common(4))


# --------------------------------------------------------------------------- PostgreSQL


def restart_with_max_connections(pg: Postgres, max_connections: int) -> None:
    """ALTER SYSTEM max_connections and restart the embedded server (a restart-only setting)."""
    if pg.external:
        return
    from db.embedded import stop_embedded

    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
    stop_embedded(pg.dir / "pg")
    server = pg._server
    with server._lock:
        server.ensure_postgres_running()
    pg.admin_url = server.get_uri()
    with psycopg.connect(pg.admin_url) as conn:
        got = conn.execute("SHOW max_connections").fetchone()[0]
    if int(got) != int(max_connections):
        raise SystemExit(f"max_connections is {got} after the restart, wanted {max_connections}")


class ActivitySampler(threading.Thread):
    """Every `every` s from a connection to the `postgres` database (not counted in the measured
    database's statistics): qbsync backends by application name, and the active ones by wait event."""

    def __init__(self, admin_url: str, datname: str, every: float = 1.0) -> None:
        super().__init__(daemon=True, name="activity-sampler")
        self.url, self.datname, self.every = admin_url, datname, every
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.samples = 0
            self.peak_backends = 0
            self.peak_by_app: Counter[str] = Counter()
            self.active: Counter[str] = Counter()      # "wait_event_type:wait_event" (or "CPU") of active backends
            self.active_total = 0

    def run(self) -> None:
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error:
            return
        with conn:
            while not self.stopped.wait(self.every):
                try:
                    rows = conn.execute(
                        "SELECT application_name, state, wait_event_type, wait_event FROM pg_stat_activity"
                        " WHERE datname = %s AND application_name LIKE 'qbsync-%%'", (self.datname,)).fetchall()
                except psycopg.Error:
                    return
                with self.lock:
                    self.samples += 1
                    self.peak_backends = max(self.peak_backends, len(rows))
                    for app, n in Counter(r[0] for r in rows).items():
                        self.peak_by_app[app] = max(self.peak_by_app[app], n)
                    for _app, state, wtype, wevent in rows:
                        if state == "active":
                            self.active_total += 1
                            self.active[f"{wtype}:{wevent}" if wtype else "CPU (no wait event)"] += 1

    def summary(self) -> dict[str, Any]:
        with self.lock:
            top = ", ".join(f"{k} {v / max(1, self.samples):.1f}" for k, v in self.active.most_common(5))
            return {"samples": self.samples, "peak_backends": self.peak_backends,
                    "peak_by_app": dict(self.peak_by_app),
                    "active_avg": self.active_total / max(1, self.samples), "active_top": top}


# --------------------------------------------------------------------------- the emulator's view


class EmulatorProbe:
    """Wraps the emulator's per-realm admission: requests in flight per realm (peak) and the start
    time of every admitted request (for the most starts in any 60 s)."""

    def __init__(self, state: Any) -> None:
        self.lock = threading.Lock()
        self.reset()
        admit, release = state.admit, state.release

        def probed_admit(realm_id: str) -> bool:
            ok = admit(realm_id)
            if ok:
                now = time.monotonic()
                with self.lock:
                    n = self.inflight[realm_id] + 1
                    self.inflight[realm_id] = n
                    if n > self.peak[realm_id]:
                        self.peak[realm_id] = n
                    self.starts[realm_id].append(now)
            return ok

        def probed_release(realm_id: str) -> None:
            with self.lock:
                self.inflight[realm_id] -= 1
            release(realm_id)

        state.admit, state.release = probed_admit, probed_release

    def reset(self) -> None:
        with self.lock:
            self.inflight: defaultdict[str, int] = defaultdict(int)
            self.peak: defaultdict[str, int] = defaultdict(int)
            self.starts: defaultdict[str, list[float]] = defaultdict(list)

    def limits(self) -> tuple[int, int, str]:
        """(highest in flight for one realm, most starts of one realm in any 60 s, that realm)."""
        with self.lock:
            peak = max(self.peak.values(), default=0)
            most, who = 0, ""
            for realm, starts in self.starts.items():
                starts = sorted(starts)
                for i, t in enumerate(starts):
                    n = bisect.bisect_right(starts, t + 60.0) - i
                    if n > most:
                        most, who = n, realm
            return peak, most, who


# --------------------------------------------------------------------------- helpers


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0, procs: list | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        for p in procs or []:
            if p.poll() is not None:
                raise SystemExit(f"sync process {p.pid} exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def seed(url: str, env: dict[str, str], emulator: EmulatorServer, realms: list[str]) -> None:
    """Tokens for every realm as `qbsync token add` stores them, and a fresh reconciliation row
    per realm (the worker's after-sync reconciliation is then not due)."""
    from services.tokens.vault import add_tokens

    settings = load_settings(env, dotenv=False)
    db = Database(url, max_size=2)
    try:
        for realm in realms:
            issued = emulator.state.issue_tokens(realm)
            add_tokens(db, settings, realm, issued["refresh_token"], access_token=issued["access_token"],
                       expires_in=3600)
    finally:
        db.close()


def hold_off_reconcile(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO quickbooks.reconciliations (run_id, realm_id, \"check\", subject, status, detail)"
        " SELECT nextval('quickbooks.reconciliation_runs'), realm_id, 'run', 'bench', 'ok',"
        " 'fleet_bench: keeps the daily reconciliation out of the measured passes' FROM quickbooks.tokens")


def start_workers(n: int, env: dict[str, str], log_dir: Path, tag: str) -> list[subprocess.Popen]:
    procs: list[subprocess.Popen] = []
    for i in range(n):
        with open(log_dir / f"{tag}-sync-{i}.log", "w") as out:
            procs.append(subprocess.Popen([*QBSYNC, "sync"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(60))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            codes.append(None)
    return codes


def failing(conn: psycopg.Connection, limit: int = 50) -> None:
    """Stop the run when the sync processes keep failing (the errors table fills up)."""
    n, last = conn.execute("SELECT count(*), (SELECT message FROM quickbooks.errors ORDER BY id DESC LIMIT 1)"
                           " FROM quickbooks.errors").fetchone()
    if n >= limit:
        raise SystemExit(f"{n} rows in quickbooks.errors, the last: {last}")


def commit_of(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()[:90] or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def wake(conn: psycopg.Connection) -> int:
    rows = conn.execute("SELECT wake_host, wake_port FROM quickbooks.sync_workers").fetchall()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for host, port in rows:
            sock.sendto(b"", (host, int(port)))
    return len(rows)


def api_request_overlap(conn: psycopg.Connection, since: dt.datetime) -> tuple[int, int]:
    """(the most requests of one realm whose [started_at, finished_at] overlap, requests counted)
    over quickbooks.api_requests rows started since `since`."""
    row = conn.execute(
        """WITH r AS (SELECT realm_id, started_at, finished_at FROM quickbooks.api_requests WHERE started_at >= %(s)s),
                ev AS (SELECT realm_id, started_at AS t, 1 AS d FROM r
                       UNION ALL SELECT realm_id, finished_at, -1 FROM r WHERE finished_at IS NOT NULL)
           SELECT COALESCE(max(c), 0), (SELECT count(*) FROM r)
             FROM (SELECT sum(d) OVER (PARTITION BY realm_id ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS c FROM ev) x""",
        {"s": since}).fetchone()
    return int(row[0]), int(row[1])


def py_spy(pid: int, seconds: int, out: Path, gil: bool = False) -> subprocess.Popen | None:
    """py-spy record of the process: raw collapsed stacks; `gil`: only samples holding the GIL."""
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        return None
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "50",
                             "--nonblocking", "--format", "raw", "--output", str(out), *(["--gil"] if gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def explain_look(conn: psycopg.Connection, take: int) -> tuple[float, str]:
    """EXPLAIN ANALYZE of the worker's look (services/sync/worker.py `_LOOK`): (ms, top of the plan)."""
    params = {"n": len(ENTITY_NAMES), "entities": list(ENTITY_NAMES), "scheduled": SCHEDULED,
              "stretch": dt.timedelta(0), "holder": "fleet-bench", "take": take}
    lines = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + _LOOK, params).fetchall()]
    ms = float(next(line for line in lines if line.startswith("Execution Time")).split()[2])
    return ms, "\n".join(lines)


def log_shares(log_dir: Path, tag: str, n: int) -> list[dict[str, int]]:
    """Per process: distinct realms with a full run and with a cdc run in its log, ERROR lines."""
    out = []
    pattern = re.compile(r"sync realm=(\S+) entity=\S+ kind=(\S+) status=")
    for i in range(n):
        text = (log_dir / f"{tag}-sync-{i}.log").read_text(errors="replace")
        kinds: defaultdict[str, set[str]] = defaultdict(set)
        for m in pattern.finditer(text):
            kinds[m.group(2)].add(m.group(1))
        out.append({"full": len(kinds["full"]), "cdc": len(kinds["cdc"]),
                    "errors": sum(1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line),
                    "warnings": sum(1 for line in text.splitlines() if " WARNING " in line)})
    return out


# --------------------------------------------------------------------------- one run


def run_fleet(args: argparse.Namespace, pg: Postgres, emulator: EmulatorServer, probe: EmulatorProbe,
              realms: list[str], expected_full: dict[str, int], n: int, c: int) -> dict[str, Any]:
    tag = f"p{n}-c{c}"
    name = f"fleet_{tag.replace('-', '_')}"
    url = pg.fresh(name)
    env = env_for(url, emulator, SYNC_CONCURRENCY=str(c), QBO_MAX_CONCURRENCY=str(PER_REALM_CONCURRENCY),
                  QBO_MAX_REQUESTS_PER_MINUTE=str(PER_REALM_PER_MINUTE),
                  RECONCILE_INTERVAL_HOURS="24" if args.with_reconcile else "744")
    for key in ("METRICS_PORT", "WEBHOOK_PORT", "SYNC_WAKE_PORT", "SYNC_INTERVAL_MINUTES", "SYNC_LEASE_SECONDS"):
        env.pop(key, None)
    emulator.state.configure(latency_ms=0)
    started = time.perf_counter()
    seed(url, env, emulator, realms)
    with psycopg.connect(url, autocommit=True) as conn:
        if not args.with_reconcile:
            hold_off_reconcile(conn)
        conn.execute("ANALYZE")
    print(f"\n[{tag}] database {name}: {len(realms)} realms' tokens stored in {time.perf_counter() - started:.1f} s;"
          f" SYNC_CONCURRENCY={c}, {n} sync process(es), latency {args.latency_ms} ms; load {loadavg()}", flush=True)
    emulator.state.configure(latency_ms=args.latency_ms)
    emulator.state.reset_counts()
    probe.reset()
    result: dict[str, Any] = {"n": n, "c": c, "load_start": loadavg()}
    stats_url = pg.admin_url.rsplit("/", 1)[0] + "/postgres" if pg.external else pg.url("postgres")
    sampler = ActivitySampler(stats_url, name)
    sampler.start()
    threads: ThreadSampler | None = None
    conn = psycopg.connect(url, autocommit=True)
    procs: list[subprocess.Popen] = []
    spy: subprocess.Popen | None = None
    try:
        n_entities = len(ENTITY_NAMES)

        # ---- the first full load
        t0 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        x0 = xacts(stats_url, name)
        cpu = {"pg": postgres_cpu_s(pg), "bench": time.process_time(), "machine": machine_busy_s()}
        wall0 = time.perf_counter()
        procs = start_workers(n, env, args.log_dir, tag)
        pids = [p.pid for p in procs]
        threads = ThreadSampler(pids)
        threads.start()
        dump_full = dump_hourly = ""
        if args.py_spy_record:
            spy = py_spy(pids[0], args.py_spy_seconds, args.py_spy / f"{tag}-full.txt", args.py_spy_gil)
        if args.py_spy:
            time.sleep(args.py_spy_seconds)
            dump_full = py_spy_dump(pids[0], args.py_spy / f"{tag}-full-dump.txt")

        def all_called() -> bool:
            counts = emulator.state.counts
            with emulator.state.lock:
                return sum(1 for r in realms if sum(counts.get(r, {}).get(k, 0) for k in DATA_KINDS)
                           >= sum(expected_full.values())) == len(realms)

        def loaded() -> bool:
            failing(conn)
            done = conn.execute(
                "SELECT count(*) FROM (SELECT realm_id FROM quickbooks.sync_state WHERE last_run_status = 'success'"
                " GROUP BY realm_id HAVING count(*) = %s) s", (n_entities,)).fetchone()[0]
            leases = conn.execute("SELECT count(*) FROM quickbooks.realm_leases").fetchone()[0]
            return done == len(realms) and leases == 0

        wait_for(lambda: all_called() and loaded(), args.timeout, "the first full load of every realm", procs=procs)
        poll_wall = time.perf_counter() - wall0
        t_end = conn.execute("SELECT max(finished_at) FROM quickbooks.sync_runs").fetchone()[0]
        cpu_full = {pid: proc_cpu_s(pid) for pid in pids}
        mem_full = {pid: proc_mem_mb(pid) for pid in pids}
        cpu_full_other = {"pg": postgres_cpu_s(pg) - cpu["pg"], "bench": time.process_time() - cpu["bench"],
                          "machine": machine_busy_s() - cpu["machine"]}
        threads_full = dict(threads.peak)
        threads.reset()
        calls_full = emulator.state.request_counts()
        per_realm_full = {r: {k: v for k, v in emulator.state.request_counts(r).items()
                              if k in DATA_KINDS and v} for r in realms}
        wrong_full = {r: got for r, got in per_realm_full.items() if got != expected_full}
        peak_full, window_full, _ = probe.limits()
        overlap_full, rows_full = api_request_overlap(conn, t0)
        runs_full = conn.execute(
            "SELECT count(*), count(DISTINCT (realm_id, entity)), count(*) FILTER (WHERE status <> 'success')"
            " FROM quickbooks.sync_runs WHERE started_at >= %s", (t0,)).fetchone()
        result["full"] = {
            "wall": (t_end - t0).total_seconds(), "poll_wall": poll_wall, "calls": calls_full,
            "wrong": wrong_full, "peak_inflight": peak_full, "max_per_60s": window_full,
            "overlap": overlap_full, "api_rows": rows_full, "runs": runs_full,
            "cpu": {pid: cpu_full[pid] for pid in pids}, "mem": mem_full, "other": cpu_full_other,
            "activity": sampler.summary(), "load": loadavg(), "threads": threads_full, "dump": dump_full}
        if spy is not None:
            spy.wait(args.py_spy_seconds + 30)
            spy = None
        time.sleep(11)  # idle backends flush their statistics within 10 s
        result["full"]["xacts"] = xacts(stats_url, name) - x0
        look_ms, look_plan = explain_look(conn, c * 4)
        result["look_ms"], result["look_plan"] = look_ms, look_plan
        f = result["full"]
        print(f"[{tag}] full load: {f['wall']:.1f} s (poll saw it at {poll_wall:.1f} s), calls"
              f" {sum(calls_full.get(k, 0) for k in DATA_KINDS)}, realms off the reference: {len(wrong_full)},"
              f" peak in flight per realm {peak_full}, api_requests overlap {overlap_full};"
              f" look {look_ms:.1f} ms; load {loadavg()}", flush=True)

        # ---- the hourly pass
        emulator.state.reset_counts()
        probe.reset()
        sampler.reset()
        x1 = xacts(stats_url, name)
        cpu = {"pg": postgres_cpu_s(pg), "bench": time.process_time(), "machine": machine_busy_s()}
        wall1 = time.perf_counter()
        with conn.transaction():
            t1 = conn.execute("UPDATE quickbooks.sync_state SET next_run_at = now() RETURNING now()").fetchone()[0]
        woken = wake(conn)
        if args.py_spy_record:
            spy = py_spy(pids[0], args.py_spy_seconds, args.py_spy / f"{tag}-hourly.txt", args.py_spy_gil)
        if args.py_spy:
            time.sleep(min(args.py_spy_seconds, 10))
            dump_hourly = py_spy_dump(pids[0], args.py_spy / f"{tag}-hourly-dump.txt")
        scheduled = list(SCHEDULED)

        def all_cdc() -> bool:
            counts = emulator.state.counts
            with emulator.state.lock:
                return sum(1 for r in realms if counts.get(r, {}).get("cdc", 0) >= 1) == len(realms)

        def passed() -> bool:
            failing(conn)
            done = conn.execute(
                "SELECT count(*) FROM (SELECT realm_id FROM quickbooks.sync_state WHERE last_run_status = 'success'"
                " AND last_success_at >= %s AND entity = ANY(%s) GROUP BY realm_id HAVING count(*) = %s) s",
                (t1, scheduled, len(scheduled))).fetchone()[0]
            leases = conn.execute("SELECT count(*) FROM quickbooks.realm_leases").fetchone()[0]
            return done == len(realms) and leases == 0

        wait_for(lambda: all_cdc() and passed(), args.timeout, "the hourly pass over every realm", every=0.5,
                 procs=procs)
        poll_wall = time.perf_counter() - wall1
        t_first, t_last = conn.execute("SELECT min(started_at), max(finished_at) FROM quickbooks.sync_runs"
                                       " WHERE started_at >= %s", (t1,)).fetchone()
        cpu_end = {pid: proc_cpu_s(pid) for pid in pids}
        mem_end = {pid: proc_mem_mb(pid) for pid in pids}
        cpu_hourly_other = {"pg": postgres_cpu_s(pg) - cpu["pg"], "bench": time.process_time() - cpu["bench"],
                            "machine": machine_busy_s() - cpu["machine"]}
        calls_hourly = emulator.state.request_counts()
        per_realm_hourly = {r: {k: v for k, v in emulator.state.request_counts(r).items()
                                if k in DATA_KINDS and v} for r in realms}
        wrong_hourly = {r: got for r, got in per_realm_hourly.items() if got != {"cdc": 1}}
        peak_hourly, window_hourly, _ = probe.limits()
        overlap_hourly, rows_hourly = api_request_overlap(conn, t1)
        runs_hourly = conn.execute(
            "SELECT count(*), count(DISTINCT (realm_id, entity)), count(*) FILTER (WHERE status <> 'success'"
            " OR kind <> 'cdc') FROM quickbooks.sync_runs WHERE started_at >= %s", (t1,)).fetchone()
        problems = conn.execute(
            "SELECT (SELECT count(*) FROM quickbooks.errors), (SELECT count(*) FROM quickbooks.lease_takeovers),"
            " (SELECT count(*) FROM quickbooks.reconciliations WHERE subject <> 'bench')").fetchone()
        result["hourly"] = {
            "wall": (t_last - t1).total_seconds(), "poll_wall": poll_wall,
            "first_start": (t_first - t1).total_seconds(), "woken": woken, "calls": calls_hourly,
            "wrong": wrong_hourly, "peak_inflight": peak_hourly, "max_per_60s": window_hourly,
            "overlap": overlap_hourly, "api_rows": rows_hourly, "runs": runs_hourly,
            "cpu": {pid: cpu_end[pid] - cpu_full[pid] for pid in pids}, "mem": mem_end,
            "other": cpu_hourly_other, "activity": sampler.summary(), "load": loadavg(),
            "threads": dict(threads.peak), "dump": dump_hourly}
        time.sleep(11)
        result["hourly"]["xacts"] = xacts(stats_url, name) - x1
        result["cpu_total"] = cpu_end
        result["problems"] = {"errors": problems[0], "takeovers": problems[1], "reconciliations": problems[2]}
        h = result["hourly"]
        print(f"[{tag}] hourly pass: {h['wall']:.1f} s (first run {h['first_start']:.2f} s after the update),"
              f" calls {sum(calls_hourly.get(k, 0) for k in DATA_KINDS)}, realms off one cdc call:"
              f" {len(wrong_hourly)}, peak in flight per realm {peak_hourly}; load {loadavg()}", flush=True)
        if spy is not None:
            spy.wait(args.py_spy_seconds + 30)
            spy = None
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        result["exit_codes"] = stop_workers(procs)
        sampler.stopped.set()
        if threads is not None:
            threads.stopped.set()
        conn.close()
        emulator.state.configure(latency_ms=0)
    result["shares"] = log_shares(args.log_dir, tag, n)
    if not args.keep_databases:
        with psycopg.connect(pg.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result


# --------------------------------------------------------------------------- the report


def fmt_calls(calls: dict[str, int]) -> str:
    parts = [f"{k} {calls[k]:,}" for k in DATA_KINDS if calls.get(k)]
    extra = [f"{k} {v:,}" for k, v in calls.items() if k not in DATA_KINDS and v and k != "no_minorversion"]
    return ", ".join(parts) + (f" (also {', '.join(extra)})" if extra else "")


def report(args: argparse.Namespace, info: dict[str, str], expected_full: dict[str, int],
           results: list[dict[str, Any]]) -> str:
    out = [f"### Fleet: {args.realms:,} realms ({', '.join(f'{k} {v}' for k, v in SHAPE.items())} each),"
           f" {args.latency_ms} ms latency",
           "",
           f"Machine: nproc {info['nproc']}, {info['cpu']}, {info['ram']} RAM, Linux {info['kernel']},"
           f" Python {info['python']}, PostgreSQL 16 (pgserver, max_connections {args.max_connections}),"
           f" {dt.date.today().isoformat()}; code measured: {commit_of(ROOT)}"
           + (" plus uncommitted changes" if subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                                              "--untracked-files=no", "db", "services"],
                                                             capture_output=True, text=True).stdout.strip() else "")
           + ".",
           f"Reference realm synced alone (`sync --once`): {fmt_calls(expected_full)} per realm.",
           "",
           "| processes × SYNC_CONCURRENCY | full load | hourly pass | speed-up (hourly) | API calls full / hourly |"
           " realms off the reference (full / hourly) | peak in flight per realm (emulator / api_requests) |"
           " most starts of one realm in 60 s | load avg at end |",
           "|---|---|---|---|---|---|---|---|---|"]
    base: dict[int, float] = {}
    for r in results:
        f, h = r["full"], r["hourly"]
        base.setdefault(r["c"], h["wall"] if r["n"] == 1 else float("nan"))
        speed = base[r["c"]] / h["wall"] if r["n"] != 1 else 1.0
        out.append(
            f"| {r['n']} × {r['c']} | {f['wall']:.1f} s | **{h['wall']:.1f} s** | {speed:.2f}× |"
            f" {sum(f['calls'].get(k, 0) for k in DATA_KINDS):,} / {sum(h['calls'].get(k, 0) for k in DATA_KINDS):,} |"
            f" {len(f['wrong'])} / {len(h['wrong'])} |"
            f" {max(f['peak_inflight'], h['peak_inflight'])} / {max(f['overlap'], h['overlap'])} |"
            f" {max(f['max_per_60s'], h['max_per_60s'])} | {h['load']} |")
    out += ["", "Per phase and process (CPU = utime+stime of the process in that phase; RSS = VmHWM so far):", "",
            "| run | phase | wall | CPU per sync process | RSS per sync process | PostgreSQL CPU |"
            " bench process CPU (emulator) | whole machine busy | others (machine − ours) | realms per process |"
            " active qbsync backends (avg; top waits) | peak qbsync backends |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for phase in ("full", "hourly"):
            p = r[phase]
            cpus = list(p["cpu"].values())
            mems = [m[0] for m in p["mem"].values()]
            ours = sum(cpus) + p["other"]["pg"] + p["other"]["bench"]
            shares = "/".join(str(s["full" if phase == "full" else "cdc"]) for s in r["shares"])
            out.append(
                f"| {r['n']} × {r['c']} | {phase} | {p['wall']:.1f} s | {' / '.join(f'{x:.1f} s' for x in cpus)} |"
                f" {' / '.join(f'{x:.0f} MB' for x in mems)} | {p['other']['pg']:.1f} s | {p['other']['bench']:.1f} s |"
                f" {p['other']['machine']:.1f} s | {p['other']['machine'] - ours:.1f} s | {shares} |"
                f" {p['activity']['active_avg']:.1f} ({p['activity']['active_top']}) |"
                f" {p['activity']['peak_backends']} |")
    out += ["", "Checks per run:", ""]
    for r in results:
        f, h = r["full"], r["hourly"]
        out.append(
            f"- {r['n']} × {r['c']}: full load calls {fmt_calls(f['calls'])}; sync_runs {f['runs'][0]:,}"
            f" ({f['runs'][1]:,} distinct realm×entity, {f['runs'][2]} not success); hourly calls"
            f" {fmt_calls(h['calls'])}; sync_runs {h['runs'][0]:,} ({h['runs'][1]:,} distinct, {h['runs'][2]}"
            f" not a successful cdc run); first run {h['first_start']:.2f} s after the update; errors rows"
            f" {r['problems']['errors']}, lease takeovers {r['problems']['takeovers']}, reconciliations run"
            f" {r['problems']['reconciliations']}; log ERROR lines {sum(s['errors'] for s in r['shares'])},"
            f" WARNING lines {sum(s['warnings'] for s in r['shares'])}; exit codes {r['exit_codes']};"
            f" look query {r['look_ms']:.1f} ms (EXPLAIN ANALYZE after the full load);"
            f" database transactions full {f.get('xacts', 0):,} ({f.get('xacts', 0) / max(1, args.realms):.0f} per realm),"
            f" hourly {h.get('xacts', 0):,} ({h.get('xacts', 0) / max(1, args.realms):.0f} per realm);"
            f" peak threads per sync process full {list(f['threads'].values())}, hourly {list(h['threads'].values())}"
            + (f"; py-spy dump (full, {args.py_spy_seconds} s in): {f['dump']}" if f["dump"] else "")
            + (f"; py-spy dump (hourly): {h['dump']}" if h["dump"] else ""))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realms", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--processes", default="1,2,4", help="comma list of sync process counts")
    parser.add_argument("--concurrency", default="64", help="comma list of SYNC_CONCURRENCY values (product: 8)")
    parser.add_argument("--quick", action="store_true", help="50 realms (unless --realms is given)")
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per phase before giving up")
    parser.add_argument("--with-reconcile", action="store_true",
                        help="let the daily reconciliation run after each realm's first sync (measured with it)")
    parser.add_argument("--log-dir", type=Path, default=None, help="sync processes' logs (default: a temp dir)")
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="one py-spy dump of the first sync process per phase (--py-spy-seconds in) into DIR")
    parser.add_argument("--py-spy-record", action="store_true",
                        help="also py-spy record (raw stacks, non-blocking) for --py-spy-seconds of each phase")
    parser.add_argument("--py-spy-gil", action="store_true", help="record only samples holding the GIL (CPU)")
    parser.add_argument("--py-spy-seconds", type=int, default=30)
    parser.add_argument("--keep-databases", action="store_true")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the Markdown block here")
    parser.add_argument("--print-plan", action="store_true", help="print the look query's plan of the last run")
    args = parser.parse_args()
    if args.quick and "--realms" not in sys.argv:
        args.realms = 50
    processes = [int(x) for x in args.processes.split(",") if x]
    concurrencies = [int(x) for x in args.concurrency.split(",") if x]
    if args.log_dir is None:
        import tempfile

        args.log_dir = Path(tempfile.mkdtemp(prefix="fleetbench-logs"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.py_spy_record and not args.py_spy:
        parser.error("--py-spy-record needs --py-spy DIR")
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}; load {loadavg()}; logs in {args.log_dir}; code {commit_of(ROOT)} in {ROOT}", flush=True)

    pg = Postgres()
    emulator = EmulatorServer(rate_limit_per_minute=500)
    emulator.start()
    results: list[dict[str, Any]] = []
    try:
        restart_with_max_connections(pg, args.max_connections)
        started = time.perf_counter()
        realms = [emulator.state.create_realm(**SHAPE) for _ in range(args.realms)]
        reference = emulator.state.create_realm(**SHAPE)
        print(f"{args.realms} realms + 1 reference generated in {time.perf_counter() - started:.1f} s", flush=True)
        ref_url = pg.fresh("fleet_reference")
        ref_env = env_for(ref_url, emulator)
        seed(ref_url, ref_env, emulator, [reference])
        emulator.state.reset_counts()
        run_sync(ref_env, reference)
        expected_full = {k: v for k, v in emulator.state.request_counts(reference).items() if k in DATA_KINDS and v}
        print(f"reference realm synced alone: {fmt_calls(expected_full)}", flush=True)
        probe = EmulatorProbe(emulator.state)
        for c in concurrencies:
            for n in processes:
                results.append(run_fleet(args, pg, emulator, probe, realms, expected_full, n, c))
        text = report(args, info, expected_full, results)
        print("\n" + text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
        for r in results:
            if r["full"]["wrong"] or r["hourly"]["wrong"]:
                sample = dict(list({**r["full"]["wrong"], **r["hourly"]["wrong"]}.items())[:3])
                print(f"{r['n']} × {r['c']}: realms whose calls differ, e.g. {sample}")
        if results and args.print_plan:
            print(results[-1]["look_plan"])
    finally:
        emulator.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
