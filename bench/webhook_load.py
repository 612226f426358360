"""Load benchmark of the webhook receiver (a script, not a test).

Starts a temporary PostgreSQL (pgserver) and `qbsync webhook` as a real subprocess, then
drives signed deliveries at a fixed rate from an open-loop load generator on loopback
(threads + requests sessions; every request has a scheduled send time, so a slow server
shows up as latency instead of silently lowering the rate). Some deliveries are repeated on
purpose, as Intuit does on retries.

Reports p50/p95/p99/max latency (send->response, and scheduled->response), the time spent
inside the app (from the receiver's own access log), status counts,
whether every event was stored exactly once (row counts), and the receiver's RSS over time.

    .venv/bin/python bench/webhook_load.py                    # 200 req/s for 60 s, 10 events each
    .venv/bin/python bench/webhook_load.py --duration 10      # quick run
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from db.embedded import stop_embedded  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from services.webhook.receiver import sign  # noqa: E402

TOKEN = "bench-verifier-token-0000"
REALMS = ["9130350000000001", "9130350000000002", "9130350000000003"]
ENTITIES = ["customer", "invoice", "estimate", "item", "vendor"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_bodies(count: int, events: int, dup_every: int) -> tuple[list[bytes], int]:
    """Request bodies (CloudEvents and classic alternating) and the number of unique events."""
    bodies: list[bytes] = []
    unique = 0
    for i in range(count):
        if dup_every and i >= dup_every and i % dup_every == 0:
            bodies.append(bodies[i - dup_every // 2])  # a redelivery of an earlier body
            continue
        realm = REALMS[i % len(REALMS)]
        if i % 2:
            doc: object = [{
                "specversion": "1.0", "id": str(uuid.uuid4()), "source": "intuit.bench",
                "type": f"qbo.{ENTITIES[(i + k) % len(ENTITIES)]}.updated.v1",
                "datacontenttype": "application/json", "time": "2026-01-02T03:04:05.123456789Z",
                "intuitentityid": str(i * events + k), "intuitaccountid": realm, "data": {}}
                for k in range(events)]
        else:
            doc = {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
                {"name": ENTITIES[(i + k) % len(ENTITIES)].capitalize(), "id": str(i * events + k),
                 "operation": "Update", "lastUpdated": "2026-01-02T03:04:05.000Z"} for k in range(events)]}}]}
        bodies.append(json.dumps(doc, separators=(",", ":")).encode())
        unique += events
    return bodies, unique


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return f"nproc {os.cpu_count()}, {model}, RAM {mem_kib / 1024 / 1024:.1f} GiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    parser.add_argument("--events", type=int, default=10, help="events per request")
    parser.add_argument("--clients", type=int, default=16, help="load-generator threads")
    parser.add_argument("--dup-every", type=int, default=20, help="every Nth request repeats an earlier body (0: none)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()

    total = int(args.rate * args.duration)
    bodies, unique_events = make_bodies(total, args.events, args.dup_every)
    signatures = [sign(TOKEN, body) for body in bodies]

    workdir = Path(tempfile.mkdtemp(prefix="qbb", dir="/tmp"))
    pgdata = workdir / "pg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    import logging
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pg = pgserver.get_server(pgdata, cleanup_mode=None)
    url = pg.get_uri()
    proc = None
    try:
        with psycopg.connect(url) as conn:
            upgrade(conn)
            for realm in REALMS:
                conn.execute("INSERT INTO quickbooks.tokens (realm_id, refresh_token) VALUES (%s, 'x')", (realm,))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL", "WEBHOOK_"))}
        env.update({"DATABASE_URL": url, "QBO_WEBHOOK_VERIFIER_TOKEN": TOKEN, "WEBHOOK_HOST": "127.0.0.1",
                    "WEBHOOK_PORT": str(port), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"})
        log_path = workdir / "webhook.log"
        qbsync = str(Path(sys.executable).parent / "qbsync")
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([qbsync, "webhook"], cwd=workdir, env=env, stdout=log_file, stderr=log_file)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"receiver did not start:\n{log_path.read_text()}")
            time.sleep(0.1)

        rss: list[tuple[float, int]] = []
        stop_sampling = threading.Event()

        def sample_rss() -> None:
            started = time.monotonic()
            while not stop_sampling.is_set():
                value = rss_kib(proc.pid)
                if value is not None:
                    rss.append((time.monotonic() - started, value))
                stop_sampling.wait(1.0)

        results: list[tuple[float, float, float, int]] = []  # scheduled, sent, done, status
        counter = itertools.count()
        lock = threading.Lock()
        t0 = time.monotonic() + 0.5

        def client() -> None:
            session = requests.Session()
            local = []
            while (i := next(counter)) < total:
                scheduled = t0 + i / args.rate
                delay = scheduled - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent = time.monotonic()
                try:
                    status = session.post(base + "/webhooks/quickbooks", data=bodies[i], timeout=10,
                                          headers={"intuit-signature": signatures[i],
                                                   "Content-Type": "application/json"}).status_code
                except requests.RequestException:
                    status = 0
                local.append((scheduled, sent, time.monotonic(), status))
            with lock:
                results.extend(local)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = max(r[2] for r in results) - t0
        stop_sampling.set()
        sampler.join()

        with psycopg.connect(url) as conn:
            rows, keys = conn.execute(
                "SELECT count(*), count(DISTINCT dedupe_key) FROM quickbooks.webhook_inbox").fetchone()
            errors = conn.execute("SELECT count(*) FROM quickbooks.errors").fetchone()[0]
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=30)

        app_ms = [float(line.rsplit(" ", 1)[1][:-2]) for line in log_path.read_text().splitlines()
                  if "POST /webhooks/quickbooks 200 " in line]
        service_ms = [(done - sent) * 1000 for _, sent, done, _ in results]
        sched_ms = [(done - scheduled) * 1000 for scheduled, _, done, _ in results]
        statuses: dict[int, int] = {}
        for *_, status in results:
            statuses[status] = statuses.get(status, 0) + 1
        rss_mib = [kib / 1024 for _, kib in rss]
        third = max(1, len(rss_mib) // 3)
        report = {
            "command": " ".join(["bench/webhook_load.py", *sys.argv[1:]]),
            "machine": machine(),
            "requests": total, "events_per_request": args.events, "target_rate": args.rate,
            "achieved_rate": round(total / elapsed, 1), "duration_s": round(elapsed, 1),
            "statuses": statuses,
            "latency_ms": {"p50": round(statistics.median(service_ms), 2), "p95": round(pct(service_ms, 95), 2),
                           "p99": round(pct(service_ms, 99), 2), "max": round(max(service_ms), 2)},
            "in_app_ms": {"p50": round(statistics.median(app_ms), 2), "p99": round(pct(app_ms, 99), 2),
                          "max": round(max(app_ms), 2)},
            "latency_from_schedule_ms": {"p50": round(statistics.median(sched_ms), 2),
                                         "p99": round(pct(sched_ms, 99), 2), "max": round(max(sched_ms), 2)},
            "unique_events_sent": unique_events, "rows_stored": rows, "distinct_keys": keys,
            "lost": unique_events - keys, "duplicated": rows - keys, "errors_rows": errors,
            "rss_mib": {"start": round(rss_mib[0], 1), "first_third_avg": round(statistics.mean(rss_mib[:third]), 1),
                        "last_third_avg": round(statistics.mean(rss_mib[-third:]), 1),
                        "max": round(max(rss_mib), 1), "samples": len(rss_mib)},
            "receiver_exit_code": exit_code,
        }
        print(f"command: {report['command']}")
        print(f"machine: {report['machine']}")
        print(f"load: {total} requests x {args.events} events at {args.rate:g}/s target, "
              f"{report['achieved_rate']}/s achieved over {report['duration_s']} s; statuses {statuses}")
        lat = report["latency_ms"]
        print(f"latency (send->response): p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
              f"max {lat['max']} ms")
        la = report["in_app_ms"]
        print(f"time inside the app (access log: verify, parse, one transaction): p50 {la['p50']} ms, "
              f"p99 {la['p99']} ms, max {la['max']} ms")
        ls = report["latency_from_schedule_ms"]
        print(f"latency (scheduled->response): p50 {ls['p50']} ms, p99 {ls['p99']} ms, max {ls['max']} ms")
        print(f"events: {unique_events} unique sent, {rows} rows, {keys} distinct keys -> "
              f"lost {report['lost']}, duplicated {report['duplicated']}")
        r = report["rss_mib"]
        print(f"receiver RSS MiB: start {r['start']}, first third avg {r['first_third_avg']}, "
              f"last third avg {r['last_third_avg']}, max {r['max']} ({r['samples']} samples)")
        print(f"receiver exit code after SIGTERM: {exit_code}")
        if args.json:
            print(json.dumps(report))
        ok = report["lost"] == 0 and report["duplicated"] == 0 and statuses.get(200) == total and exit_code == 0
        return 0 if ok else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_embedded(pgdata)
        pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
