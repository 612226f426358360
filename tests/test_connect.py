"""`qbsync connect` end to end against the emulator: pasted redirect URL, --redirect-url, --listen,
a wrong state refused with nothing stored, and `complete_authorization` as the webhook calls it."""

from __future__ import annotations

import socket
import subprocess
import sys
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support import get_when_listening

from services.tokens.connect import OAuthStateError, complete_authorization, create_state

QBSYNC = [sys.executable, "-m", "services.cli"]


def start_connect(env: dict[str, str], cwd, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*QBSYNC, "connect", *extra], env=env, cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_authorization_url(proc: subprocess.Popen, authorize_url: str) -> str:
    for _ in range(20):
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(authorize_url):
            return line.strip()
    raise AssertionError(f"no authorization URL printed; stderr: {proc.stderr.read()}")


def approve(url: str) -> str:
    """What the browser does: Intuit's consent page redirects to the redirect URI (Location)."""
    resp = requests.get(url, allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    return resp.headers["Location"]


def stored(db) -> tuple[list, list]:
    with db.transaction() as conn:
        tokens = conn.execute("SELECT realm_id, status, refresh_token FROM quickbooks.tokens").fetchall()
        companies = conn.execute("SELECT id, name FROM quickbooks.companies").fetchall()
    return tokens, companies


def test_connect_with_a_pasted_redirect_url_stores_tokens_and_company(db, emulator, qbsync_env, tmp_path):
    realm_id = emulator.admin.create_realm(company_name="Café Montréal", customers=0, items=0, invoices=0,
                                           estimates=0)
    emulator.admin.set_authorize_realm(realm_id)
    proc = start_connect(qbsync_env, tmp_path)
    try:
        url = read_authorization_url(proc, qbsync_env["QBO_AUTHORIZE_URL"])
        query = parse_qs(urlsplit(url).query)
        assert query["response_type"] == ["code"]
        assert query["scope"] == ["com.intuit.quickbooks.accounting"]
        assert query["redirect_uri"] == [qbsync_env["QBO_REDIRECT_URI"]]
        assert len(query["state"][0]) >= 20
        out, err = proc.communicate(approve(url) + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"Connected realm {realm_id} (Café Montréal)" in out
    tokens, companies = stored(db)
    assert tokens == [(realm_id, "active", emulator.admin.newest_tokens(realm_id)["refresh_token"])]
    assert companies == [(realm_id, "Café Montréal")]
    assert emulator.admin.request_counts(realm_id)["token:authorization_code"] == 1


def test_a_wrong_state_is_refused_and_nothing_is_stored(db, emulator, qbsync_env, tmp_path):
    proc = start_connect(qbsync_env, tmp_path)
    try:
        location = approve(read_authorization_url(proc, qbsync_env["QBO_AUTHORIZE_URL"]))
        parts = urlsplit(location)
        forged = dict(parse_qs(parts.query))
        forged["state"] = ["forged-state-from-somewhere-else"]
        out, err = proc.communicate(parts._replace(query=urlencode(forged, doseq=True)).geturl() + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "state" in lines[0] and "refused" in lines[0]
    assert stored(db) == ([], [])
    assert emulator.admin.request_counts()["token:authorization_code"] == 0


def test_redirect_url_option_completes_a_pending_authorization_and_is_single_use(db, emulator, qbsync_env,
                                                                                 tmp_path):
    # The first `connect` shows the URL; the SSH session ends before the user pastes.
    proc = start_connect(qbsync_env, tmp_path)
    try:
        location = approve(read_authorization_url(proc, qbsync_env["QBO_AUTHORIZE_URL"]))
    finally:
        proc.kill()
        proc.wait()
    realm_id = parse_qs(urlsplit(location).query)["realmId"][0]

    done = subprocess.run([*QBSYNC, "connect", "--redirect-url", location], env=qbsync_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stored(db)[0][0][:2] == (realm_id, "active")

    replay = subprocess.run([*QBSYNC, "connect", "--redirect-url", location], env=qbsync_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert replay.returncode == 1 and "already used" in replay.stderr
    assert "Traceback" not in replay.stderr


def test_connect_listen_receives_the_callback_on_the_redirect_uri(db, emulator, qbsync_env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**qbsync_env, "QBO_REDIRECT_URI": f"http://127.0.0.1:{port}/oauth/callback"}
    proc = start_connect(env, tmp_path, "--listen", "--timeout", "60")
    try:
        location = approve(read_authorization_url(proc, env["QBO_AUTHORIZE_URL"]))
        page = get_when_listening(location, 5, "the listener (it starts right after the URL is printed)")
        assert page.status_code == 200 and "close this tab" in page.text
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    realm_id = parse_qs(urlsplit(location).query)["realmId"][0]
    assert stored(db)[0][0][:2] == (realm_id, "active")


def test_complete_authorization_validates_states_created_by_another_process(db, settings, emulator):
    """The webhook's /oauth/callback path: no expected state in memory, the state lives in Postgres."""
    realm_id = emulator.admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    emulator.admin.set_authorize_realm(realm_id)
    state = create_state(db)
    auth_url = (f"{settings.authorize_url}?" + urlencode({
        "client_id": settings.client_id, "response_type": "code", "scope": "com.intuit.quickbooks.accounting",
        "redirect_uri": settings.redirect_uri, "state": state}))
    params = {k: v[0] for k, v in parse_qs(urlsplit(approve(auth_url)).query).items()}

    with pytest.raises(OAuthStateError):
        complete_authorization(db, settings, {**params, "state": "not-a-state-we-issued"})
    assert stored(db) == ([], [])

    assert complete_authorization(db, settings, params) == realm_id
    with pytest.raises(OAuthStateError):  # single use
        complete_authorization(db, settings, params)
    with db.transaction() as conn:
        row = conn.execute("SELECT realm_id, completed_at IS NOT NULL FROM quickbooks.oauth_states"
                           " WHERE state = %s", (state,)).fetchone()
    assert row == (realm_id, True)


def test_connect_for_an_expected_realm_refuses_another_company(db, settings, emulator):
    wanted = emulator.admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    other = emulator.admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    emulator.admin.set_authorize_realm(other)
    state = create_state(db, expected_realm_id=wanted)
    params = {"code": "whatever-code", "state": state, "realmId": other}
    with pytest.raises(Exception, match="expected"):
        complete_authorization(db, settings, params, state)
    assert stored(db) == ([], [])


def test_connect_waits_for_the_webhook_servers_callback(db, emulator, qbsync_env, tmp_path):
    """Redirect URI on the webhook receiver: it completes the flow; `connect` notices through Postgres."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**qbsync_env, "WEBHOOK_PORT": str(port), "QBO_REDIRECT_URI": f"http://127.0.0.1:{port}/oauth/callback"}
    webhook = subprocess.Popen([*QBSYNC, "webhook"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    proc = start_connect(env, tmp_path, "--timeout", "60")
    try:
        location = approve(read_authorization_url(proc, env["QBO_AUTHORIZE_URL"]))
        page = get_when_listening(location, 10, "the webhook receiver")  # the browser follows the redirect
        assert page.status_code == 200, page.text
        out, err = proc.communicate(timeout=60)  # nothing is pasted (stdin reaches EOF)
    finally:
        for p in (proc, webhook):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert proc.returncode == 0, err
    realm_id = parse_qs(urlsplit(location).query)["realmId"][0]
    assert f"Connected realm {realm_id}" in out
    assert stored(db)[0][0][:2] == (realm_id, "active")
