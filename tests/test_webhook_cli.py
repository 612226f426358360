"""`qbsync webhook` as a real process: serves, logs access lines, stops on SIGTERM with 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import requests
from support import free_port, get_when_listening
from support.samples import SAMPLES

from services.webhook.receiver import sign

TOKEN = "cli-verifier-token-42"
QBSYNC = str(Path(sys.executable).parent / "qbsync")


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL", "WEBHOOK_"))}
    env.update({"PYTHONUNBUFFERED": "1", "RESTART_DELAY_SECONDS": "1", "HOME": str(tmp_path)})
    return env


def test_qbsync_webhook_serves_and_stops_cleanly_on_sigterm(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path) | {"DATABASE_URL": database_url, "QBO_WEBHOOK_VERIFIER_TOKEN": TOKEN,
                                "WEBHOOK_HOST": "127.0.0.1", "WEBHOOK_PORT": str(port)}
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([QBSYNC, "webhook"], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
    try:
        base = f"http://127.0.0.1:{port}"
        health = get_when_listening(base + "/healthz", 30, "the receiver's /healthz", proc=proc, details=err.read_text)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        body = (SAMPLES / "webhook_cloudevents_sample_app.json").read_bytes()
        signature = sign(TOKEN, body)
        stored = requests.post(base + "/webhooks/quickbooks", data=body, timeout=10,
                               headers={"intuit-signature": signature, "Content-Type": "application/cloudevents+json"})
        assert stored.json() == {"stored": 1, "duplicates": 0}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT entity, operation FROM quickbooks.webhook_inbox").fetchall() == [("Customer", "Create")]
    logs = out.read_text() + err.read_text()
    assert f"listening on http://127.0.0.1:{port}/webhooks/quickbooks" in logs
    access = [line for line in out.read_text().splitlines() if "POST /webhooks/quickbooks" in line]
    assert len(access) == 1
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} [+-]\d{2}:\d{2} INFO webhook: "
                        r"POST /webhooks/quickbooks 200 events=1 \d+\.\dms", access[0]), access[0]
    assert signature not in logs and TOKEN not in logs and "88cd52aa" not in logs
    assert "Traceback" not in logs


def test_qbsync_webhook_without_verifier_token_exits_2_with_one_line(database_url: str, tmp_path: Path) -> None:
    env = base_env(tmp_path) | {"DATABASE_URL": database_url, "WEBHOOK_PORT": str(free_port())}
    done = subprocess.run([QBSYNC, "webhook"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "QBO_WEBHOOK_VERIFIER_TOKEN" in lines[0]
