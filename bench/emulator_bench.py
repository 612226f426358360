"""Emulator speed: generate the benchmark company and page through its invoices over HTTP.

    .venv/bin/python bench/emulator_bench.py [invoices]

Prints the generation time, the time to page every invoice (MAXRESULTS 1000) and the
server-side cost of one 1,000-row page.
"""

from __future__ import annotations

import sys
import time

import requests

from services.emulator.server import EmulatorServer


def main() -> int:
    invoices = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with EmulatorServer(rate_limit_per_minute=1_000_000) as server:
        started = time.perf_counter()
        realm = server.state.create_realm(customers=10_000, items=1_000, invoices=invoices, estimates=20_000, seed=1)
        print(f"generate: {time.perf_counter() - started:.1f} s")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {server.state.issue_tokens(realm)['access_token']}"
        started, position, seen = time.perf_counter(), 1, 0
        while True:
            resp = session.get(f"{server.url}/v3/company/{realm}/query", timeout=60, params={
                "query": f"SELECT * FROM Invoice ORDERBY Id STARTPOSITION {position} MAXRESULTS 1000",
                "minorversion": "75"})
            page = resp.json()["QueryResponse"].get("Invoice", [])
            seen += len(page)
            position += len(page)
            if len(page) < 1000:
                break
        print(f"paged {seen} invoices over HTTP: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        for _ in range(20):
            server.state.query(realm, "SELECT * FROM Invoice ORDERBY Id STARTPOSITION 50001 MAXRESULTS 1000")
        print(f"one 1,000-row page, server side: {(time.perf_counter() - started) / 20 * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
