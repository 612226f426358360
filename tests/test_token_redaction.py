"""No token, client secret or verifier token leaks: every token command, successes and failures,
as real processes at LOG_LEVEL=DEBUG; then stdout, stderr, the errors table, token_events,
oauth_states and `qbsync status --json` are searched for every secret the emulator ever issued."""

from __future__ import annotations

import base64
import subprocess
import sys
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET, EMULATOR_VERIFIER_TOKEN

QBSYNC = [sys.executable, "-m", "services.cli"]
WRONG_SECRET = "wrong-client-secret-7f3a9c"


@pytest.mark.slow
def test_no_secret_reaches_output_errors_events_or_status(db, emulator, qbsync_env, tmp_path):
    env = {**qbsync_env, "LOG_LEVEL": "DEBUG"}
    transcript: list[str] = []

    def qbsync(*argv: str, env_over: dict[str, str] | None = None, stdin: str | None = None) -> int:
        run = subprocess.run([*QBSYNC, *argv], env={**env, **(env_over or {})}, cwd=tmp_path, input=stdin,
                             capture_output=True, text=True, timeout=60)
        transcript.extend([run.stdout, run.stderr])
        return run.returncode

    admin = emulator.admin
    a = admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    b = admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    c = admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    ta, tb = admin.issue_tokens(a), admin.issue_tokens(b, access_expires_in=120)

    # successes
    assert qbsync("token", "add", "--realm-id", a, "--refresh-token", ta["refresh_token"],
                  "--access-token", ta["access_token"], "--expires-in", "3600") == 0
    assert qbsync("token", "add", "--realm-id", b, "--refresh-token", tb["refresh_token"],
                  "--access-token", tb["access_token"], "--expires-in", "120") == 0
    assert qbsync("token", "refresh", "--realm-id", a) == 0
    assert qbsync("tokenup", "--once") == 0
    admin.set_authorize_realm(c)
    proc = subprocess.Popen([*QBSYNC, "connect"], env=env, cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next(line.strip() for line in iter(proc.stdout.readline, "") if line.startswith("http"))
        location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
        out, err = proc.communicate(location + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    transcript.extend([url, out, err])
    assert proc.returncode == 0, err

    # failures
    assert qbsync("token", "refresh", "--realm-id", a, env_over={"QBO_CLIENT_SECRET": WRONG_SECRET}) == 2
    forged = parse_qs(urlsplit(location).query)
    forged["state"] = ["not-ours"]
    assert qbsync("connect", "--redirect-url", "http://127.0.0.1:9/oauth/callback?" +
                  urlencode(forged, doseq=True)) == 1
    admin.invalidate_refresh_tokens(b)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET expires_at = now() WHERE realm_id = %s", (b,))
    assert qbsync("tokenup", "--once") == 1
    assert qbsync("token", "refresh", "--realm-id", b) == 1
    assert qbsync("token", "add", "--realm-id", "x y", "--refresh-token", ta["refresh_token"]) == 2
    assert qbsync("token", "revoke", "--realm-id", a) == 0
    status_code = qbsync("status", "--json")
    assert status_code in (0, 1, 2)  # 2: realm b needs reauth (a monitoring check), not a crash

    # the failures really happened and were recorded
    with db.transaction() as conn:
        codes = {r[0] for r in conn.execute("SELECT code FROM quickbooks.errors")}
        states = dict(conn.execute("SELECT realm_id, status FROM quickbooks.tokens").fetchall())
        stored_text = [r[0] for r in conn.execute(
            "SELECT row_to_json(e)::text FROM quickbooks.errors e UNION ALL"
            " SELECT row_to_json(t)::text FROM quickbooks.token_events t UNION ALL"
            " SELECT row_to_json(s)::text FROM quickbooks.oauth_states s")]
    assert {"invalid_client", "invalid_grant"} <= codes
    assert states == {a: "disconnected", b: "needs_reauth", c: "active"}
    output = "\n".join(transcript)
    assert "InvalidClient" in output and "needs re-authorization" in output and '"realms"' in output

    with emulator.state.lock:
        issued = [*emulator.state.access_tokens, *emulator.state.refresh_tokens, *emulator.state.auth_codes]
    basic = base64.b64encode(f"{EMULATOR_CLIENT_ID}:{EMULATOR_CLIENT_SECRET}".encode()).decode()
    secrets = [*issued, EMULATOR_CLIENT_SECRET, EMULATOR_VERIFIER_TOKEN, WRONG_SECRET, basic]
    assert len(issued) >= 8
    for place, text in (("command output", output), ("database", "\n".join(stored_text))):
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert leaked == [], f"secrets in {place}: {leaked}"
