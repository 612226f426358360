"""The README on a fresh clone: the install step; production's `.env` + `supervisord -c supervisord.conf`
with nothing created by hand (all three RUNNING, then `supervisorctl shutdown`); then the demo."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import free_port, wait_for

from services.ops.supervisor_rpc import process_states

pytestmark = pytest.mark.slow  # clones the repository, installs it and runs supervisord end to end

ROOT = Path(__file__).parents[1]


def test_fresh_clone_installs_runs_under_supervisord_and_the_demo_moves_data_end_to_end(qbsync_env) -> None:
    home = Path(tempfile.mkdtemp(prefix="qbfc"))
    clone = home / "qbsync"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QBO_", "DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH"))}
    demo = None
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
        base_python = getattr(sys, "_base_executable", sys.executable)
        install = subprocess.run([base_python, "dev.py", "install"], cwd=clone, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stdout + install.stderr
        # a newcomer's first screen is progress lines, not pip's or setuptools' warning blocks
        assert all(line.startswith("dev.py: ") for line in (install.stdout + install.stderr).splitlines()), \
            install.stdout + install.stderr
        for name in ("logs", "var"):
            assert (clone / name).is_dir() and (clone / name).stat().st_mode & 0o777 == 0o750
        supervised(clone, env, qbsync_env)
        demo = subprocess.Popen([str(clone / ".venv" / "bin" / "qbsync"), "demo", "--for", "60", "--no-tui"],
                                cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        out, _ = demo.communicate(timeout=400)
        assert demo.returncode == 0, out
        assert "data flowed end to end" in out
    finally:
        if demo is not None and demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        from db.embedded import stop_embedded

        stop_embedded(clone / "var" / "pg")
        leftovers = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True).stdout.split()
        for pid in leftovers:
            os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    assert not leftovers, "the demo left processes running"


def supervised(clone: Path, env: dict[str, str], qbsync_env: dict[str, str]) -> None:
    """README steps 2 and 7 on the clone: `.env`, `supervisord -c supervisord.conf`, RUNNING, shutdown."""
    settings = {k: v for k, v in qbsync_env.items() if k.startswith(("QBO_", "DATABASE_URL"))}
    settings["WEBHOOK_PORT"] = str(free_port())
    dotenv = clone / ".env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    dotenv.chmod(0o600)
    bin_dir = clone / ".venv" / "bin"
    conf = str(clone / "supervisord.conf")
    try:
        started = subprocess.run([str(bin_dir / "supervisord"), "-c", conf], cwd=clone, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        sock = clone / "var" / "supervisor.sock"
        wait_for(lambda: sock.exists() and len(process_states(sock)) == 3
                 and all(p["state"] == "RUNNING" for p in process_states(sock)), 60, "all three RUNNING")
    finally:
        pidfile = clone / "var" / "supervisord.pid"
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        subprocess.run([str(bin_dir / "supervisorctl"), "-c", conf, "shutdown"], cwd=clone, env=env,
                       capture_output=True, timeout=60)
        if pid is not None:
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "supervisord stopped")
        dotenv.unlink()
