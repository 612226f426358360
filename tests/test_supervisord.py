"""A real `supervisord -n` from a temporary copy of supervisord.conf, against a real database
and the emulator: PM2's restart rules, timestamps, no secrets, a clean stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, wait_for

from services.ops.supervisor_rpc import UnixSocketTransport, process_states

pytestmark = pytest.mark.slow  # a real supervisord end to end: restarts, FATAL after retries, shutdown

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} [+-]\d{2}:\d{2} ")


def _states(sock: Path) -> dict[str, str]:
    return {p["name"]: p["state"] for p in process_states(sock)}


@pytest.fixture
def supervised(tmp_path: Path, qbsync_env: dict[str, str], emulator) -> Iterator[dict]:
    """supervisord from a temp copy of the conf; tokenup gets a broken variable."""
    home = Path(tempfile_short())
    conf_text = (ROOT / "supervisord.conf").read_text()
    broken = conf_text.replace(
        'environment=PYTHONUNBUFFERED="1",RESTART_DELAY_SECONDS="10"',
        'environment=PYTHONUNBUFFERED="1",RESTART_DELAY_SECONDS="10",QBO_MAX_CONCURRENCY="99"', 1)
    assert broken != conf_text
    (home / "supervisord.conf").write_text(broken)
    (home / ".venv").symlink_to(BIN.parent)
    (home / "var").mkdir()
    (home / "logs").mkdir()
    realm = emulator.admin.create_realm(customers=5, items=3, invoices=5, estimates=2)
    issued = emulator.admin.issue_tokens(realm)
    env = {**qbsync_env, "WEBHOOK_PORT": str(free_port()), "SYNC_INTERVAL_MINUTES": "60"}
    add = subprocess.run([str(BIN / "qbsync"), "token", "add", "--realm-id", realm, "--refresh-token",
                          issued["refresh_token"], "--access-token", issued["access_token"], "--expires-in", "3600"],
                         env=env, cwd=home, capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    proc = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(home / "supervisord.conf")],
                            cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield {"home": home, "proc": proc, "sock": home / "var" / "supervisor.sock", "env": env, "issued": issued}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid_line in subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split():
            os.kill(int(pid_line), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def tempfile_short() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="qbsv")  # short: unix socket paths are limited to ~100 bytes


def test_supervisord_runs_restarts_gives_up_on_config_errors_and_stops_cleanly(supervised: dict) -> None:
    sock, home = supervised["sock"], supervised["home"]
    wait_for(lambda: sock.exists() and _states(sock).get("sync") == "RUNNING"
          and _states(sock).get("webhook") == "RUNNING", 40, "sync and webhook RUNNING")

    # kill -9 of sync: supervisord brings it back (STARTING, then RUNNING after startsecs).
    rpc = xmlrpc.client.ServerProxy("http://localhost", transport=UnixSocketTransport(sock))
    old_pid = rpc.supervisor.getProcessInfo("qbsync:sync")["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: rpc.supervisor.getProcessInfo("qbsync:sync")["pid"] not in (0, old_pid)
          and _states(sock)["sync"] == "RUNNING", 40, "sync RUNNING again with a new pid")

    # tokenup has a broken variable: it exits at once each time and ends FATAL after 6 attempts.
    wait_for(lambda: _states(sock).get("tokenup") == "FATAL", 90, "tokenup FATAL")
    err_log = (home / "logs" / "tokenup.err.log").read_text()
    attempts = [line for line in err_log.splitlines() if "QBO_MAX_CONCURRENCY" in line]
    assert len(attempts) == 6, err_log
    main_log = (home / "logs" / "supervisord.log").read_text()
    spawns = [line for line in main_log.splitlines() if "spawned: 'tokenup'" in line]
    assert len(spawns) == 6
    assert "gave up: tokenup entered FATAL state" in main_log

    # A stop finishes well within stopwaitsecs and the workers exit 0.
    started = time.monotonic()
    supervised["proc"].send_signal(signal.SIGTERM)
    supervised["proc"].wait(60)
    assert time.monotonic() - started < 35
    main_log = (home / "logs" / "supervisord.log").read_text()
    assert "stopped: sync (exit status 0)" in main_log
    assert "stopped: webhook (exit status 0)" in main_log

    # Log files exist, every worker line carries a PM2-style timestamp, and no secret appears.
    env, issued = supervised["env"], supervised["issued"]
    secrets = [env["QBO_CLIENT_SECRET"], env["QBO_WEBHOOK_VERIFIER_TOKEN"], issued["refresh_token"],
               issued["access_token"]]
    for program in ("tokenup", "sync", "webhook"):
        for stream in ("out", "err"):
            assert (home / "logs" / f"{program}.{stream}.log").exists()
    for log_file in (home / "logs").glob("*.log"):
        text = log_file.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), log_file.name
        if log_file.name != "supervisord.log":
            for line in text.splitlines():
                if line and not line.startswith((" ", "Traceback")):
                    assert STAMP.match(line), (log_file.name, line)
    assert any((home / "logs" / f"{p}.out.log").read_text() for p in ("sync", "webhook"))
