from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QBSYNC = str(Path(sys.executable).parent / "qbsync")


def _doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([QBSYNC, "doctor"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_doctor_prints_one_line_per_check_and_fails_without_supervisord(qbsync_env, tmp_path) -> None:
    (tmp_path / "logs").mkdir()
    proc = _doctor(qbsync_env, tmp_path)
    lines = proc.stdout.strip().splitlines()
    by_name = {line.split()[1]: line for line in lines[:-1]}
    assert set(by_name) == {"config", "database", "token", "api", "supervisord", "logs", "webhook"}
    assert by_name["config"].startswith("ok") and by_name["database"].startswith("ok")
    assert by_name["api"].startswith("ok") and by_name["token"].startswith("ok")
    assert by_name["supervisord"].startswith("FAIL") and "supervisord -c" in by_name["supervisord"]
    assert proc.returncode == 1 and lines[-1] == "1 problem(s) found"


def test_doctor_names_what_is_wrong(qbsync_env, tmp_path, empty_database_url) -> None:
    env = {**qbsync_env, "DATABASE_URL": empty_database_url, "QBO_API_BASE_URL": "http://127.0.0.1:9",
           "QBO_TOKEN_URL": "http://127.0.0.1:9/oauth2/v1/tokens/bearer"}
    del env["QBO_WEBHOOK_VERIFIER_TOKEN"]
    proc = _doctor(env, tmp_path)
    out = proc.stdout
    assert "pending: run `qbsync db upgrade`" in out
    assert "http://127.0.0.1:9 unreachable" in out
    assert "http://127.0.0.1:9/oauth2/v1/tokens/bearer unreachable" in out  # a URL is not a secret
    assert "does not exist: run `python3 dev.py install`" in out
    assert not (tmp_path / "logs").exists()  # doctor reports; it does not fix by side effect
    assert "QBO_WEBHOOK_VERIFIER_TOKEN is not set" in out
    assert qbsync_env["QBO_CLIENT_SECRET"] not in out + proc.stderr
    assert proc.returncode == 1
