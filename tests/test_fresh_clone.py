"""The README on a fresh clone: the install step, then `qbsync demo --for 60 --no-tui`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_fresh_clone_installs_and_the_demo_moves_data_end_to_end() -> None:
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
