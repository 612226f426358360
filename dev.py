#!/usr/bin/env python3
"""The README's two commands; each installs what it needs into ./.venv first.

    python3 dev.py run     qbsync locally: embedded PostgreSQL, QBO emulator, workers, console
    python3 dev.py test    the test suite (extra arguments go to pytest)

Needs nothing but Python 3.11+: the virtual environment, the dependencies (PyPI) and the
embedded PostgreSQL (the pgserver wheel) are installed here. Reinstalls when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".qbsync-installed"


def install() -> None:
    """Create .venv and install qbsync with its test extras, unless already current."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and (BIN / "qbsync").exists():
        return
    if sys.version_info < (3, 11):
        sys.exit(f"qbsync needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", flush=True)
        venv.create(VENV, with_pip=True)
    print("dev.py: installing qbsync and its dependencies into .venv", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _quiet([*pip, "--upgrade", "pip"])
    _quiet([*pip, "-e", f"{ROOT}[test]"])
    STAMP.write_text(digest)


def make_runtime_dirs() -> None:
    """logs/ and var/ (supervisord's log, socket and pid file), private to the installing user."""
    for name in ("logs", "var"):
        folder = ROOT / name
        folder.mkdir(mode=0o750, exist_ok=True)
        folder.chmod(0o750)


def _quiet(command: list[str]) -> None:
    """Run an install step; its output (pip's and setuptools' warnings) is shown only if it fails."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        sys.exit(f"dev.py: {' '.join(command[2:4])} failed (exit {done.returncode})")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "install"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    install()
    make_runtime_dirs()
    os.chdir(ROOT)
    if command == "run":
        os.execv(str(BIN / "qbsync"), [str(BIN / "qbsync"), "demo", *rest])
    if command == "test":
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
