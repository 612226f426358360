"""A configuration error is found before the command's modules load: one line, exit 2, at once
(under supervisord a worker must fail inside startsecs=5 even on a starved machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
from services.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("psycopg", "requests", "services.tokens.vault", "services.sync.engine",
                           "services.webhook.receiver") if m in sys.modules)
print(json.dumps({"rc": rc, "loaded": heavy}))
"""


@pytest.mark.parametrize("argv", [["tokenup"], ["sync", "--once"], ["webhook"], ["status"]])
def test_a_bad_variable_fails_before_the_command_loads(tmp_path: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL", "WEBHOOK_"))}
    env.update(QBO_CLIENT_ID="id", QBO_CLIENT_SECRET="secret", QBO_MAX_CONCURRENCY="99")
    run = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"rc": 2, "loaded": []}, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "QBO_MAX_CONCURRENCY" in line and "configuration error" in line
