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
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True, cwd=ROOT)
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "install"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    install()
    os.chdir(ROOT)
    if command == "run":
        os.execv(str(BIN / "qbsync"), [str(BIN / "qbsync"), "demo", *rest])
    if command == "test":
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
