"""services.core.worker.run_worker in a real process: PM2's restart semantics under supervisord.

- a runtime failure: one log line (no traceback, no secret), then the restart delay, then exit 1;
- SIGTERM during that delay: exit at once (exit 1, it still failed);
- a configuration error: exit 2 at once, without the delay;
- a body that returns when SIGTERM sets the stop flag: exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SECRET = "rt-secret-0123456789abcdef"

SCRIPT = f"""
import sys, time
from services.core.errors import ConfigError
from services.core.logs import register_secret, setup_logging
from services.core.worker import run_worker

register_secret({SECRET!r})
setup_logging("testworker", "INFO")
mode, delay = sys.argv[1], float(sys.argv[2])

def body(stop):
    print("body started", flush=True)
    if mode == "runtime":
        raise RuntimeError("disk on fire\\nsecond line with {SECRET}")
    if mode == "config":
        raise ConfigError("QBO_CLIENT_ID is not set")
    while not stop.requested:
        stop.wait(0.05)
    print("body saw the stop flag", flush=True)

sys.exit(run_worker("testworker", delay, body))
"""


def start(tmp_path: Path, mode: str, delay: float) -> subprocess.Popen:
    script = tmp_path / "worker_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script), mode, str(delay)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(stream, text: str, timeout: float = 30) -> float:
    """Read lines until one contains `text`; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if text in line:
            return time.monotonic()
    raise AssertionError(f"no line with {text!r}")


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_runtime_failure_logs_one_line_waits_the_restart_delay_then_exits_1(tmp_path: Path, procs) -> None:
    delay = 2.0
    proc = start(tmp_path, "runtime", delay)
    procs.append(proc)
    failed_at = wait_for_line(proc.stderr, "testworker failed")
    code = proc.wait(timeout=60)
    exited_at = time.monotonic()
    out, err = proc.communicate()
    assert code == 1
    assert exited_at - failed_at >= delay * 0.95  # the exit comes after the restart delay
    assert "Traceback" not in err and SECRET not in err + out
    assert "second line" not in err  # one line: the exception's first line only
    assert f"waiting {delay:.0f} s (restart delay) before exiting" in out


def test_sigterm_during_the_restart_delay_exits_at_once(tmp_path: Path, procs) -> None:
    delay = 120.0
    proc = start(tmp_path, "runtime", delay)
    procs.append(proc)
    wait_for_line(proc.stdout, "restart delay")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1  # far less than the 120 s delay
    _, err = proc.communicate()
    assert "Traceback" not in err


def test_a_configuration_error_exits_2_without_the_delay(tmp_path: Path, procs) -> None:
    proc = start(tmp_path, "config", 120.0)
    procs.append(proc)
    assert proc.wait(timeout=30) == 2  # no restart delay: supervisord counts it towards FATAL
    out, err = proc.communicate()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "configuration error: QBO_CLIENT_ID is not set" in lines[0]
    assert "restart delay" not in out


def test_a_body_that_returns_on_sigterm_exits_0(tmp_path: Path, procs) -> None:
    proc = start(tmp_path, "loop", 120.0)
    procs.append(proc)
    wait_for_line(proc.stdout, "body started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out, err = proc.communicate()
    assert "body saw the stop flag" in out
    assert "received SIGTERM" in out and err.strip() == ""
