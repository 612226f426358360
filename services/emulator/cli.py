"""`qbsync emulator`: run the local QBO emulator in the foreground until SIGTERM/SIGINT.

With `--seed-data` it generates one company and prints one line with the realm id and the
base URL (never a token: get those from the admin API, `EmulatorAdmin.issue_tokens`). The
ledger's other sizes follow `--invoices` (services.emulator.ledger.ledger_sizes); a parser that
offers them passes `sizes` as "Entity=N" strings (e.g. `--size Payment=400`) and `sales_tax`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from services.emulator.ledger import ledger_sizes
from services.emulator.server import EmulatorServer

__all__ = ["cmd_emulator"]


def _sizes(pairs: list[str] | None) -> dict[str, int] | None:
    """["Payment=400", ...] as {"Payment": 400}; ValueError on anything else."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        entity, sep, count = pair.partition("=")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"size {pair!r} is not Entity=N")
        out[entity.strip()] = int(count)
    return out


def cmd_emulator(args: argparse.Namespace, settings: Any) -> int:
    """Serve until SIGTERM/SIGINT; exit 0 on a signal, 1 (one stderr line) if it cannot start,
    2 on bad sizes."""
    for name in ("customers", "items", "invoices", "estimates"):
        if getattr(args, name, 0) < 0:
            print(f"qbsync emulator: --{name} must be >= 0", file=sys.stderr)
            return 2
    try:
        ledger_sizes(args.invoices, _sizes(getattr(args, "sizes", None)))
    except ValueError as exc:
        print(f"qbsync emulator: {exc}", file=sys.stderr)
        return 2
    server = EmulatorServer(args.host, args.port, latency_ms=args.latency_ms,
                            rate_limit_per_minute=args.rate_limit)
    try:
        server.start()
    except OSError as exc:
        print(f"qbsync emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _handler(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.webhook_url:
            server.state.configure(webhook_url=args.webhook_url, webhook_format=args.webhook_format)
        if args.seed_data:
            realm_id = server.state.create_realm(customers=args.customers, items=args.items,
                                                 invoices=args.invoices, estimates=args.estimates,
                                                 sizes=_sizes(getattr(args, "sizes", None)),
                                                 sales_tax=bool(getattr(args, "sales_tax", False)))
            print(f"emulator realm_id={realm_id} url={server.url}", flush=True)
        else:
            print(f"emulator url={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
