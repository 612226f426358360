"""End to end: `qbsync tui` in a real terminal (tmux, 100x30, TERM=xterm-256color) against a real
database and the emulator: one row per entity group, `d` lists every entity, `r` makes one refresh
at the emulator and `q` ends the session."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import wait_for

from services.model.entities import ENTITY_NAMES, GROUPS

pytestmark = pytest.mark.slow  # the console in a real tmux terminal

QBSYNC = str(Path(sys.executable).parent / "qbsync")


def _tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        pytest.fail("tmux is not installed (expected at /usr/bin/tmux on this machine image): "
                    "apt-get install tmux")
    return path


def test_tui_in_tmux_shows_company_tokens_entities_and_keys_work(db, settings, emulator, qbsync_env,
                                                                 tmp_path) -> None:
    tmux = _tmux()
    from services.tokens.vault import add_tokens

    realm = emulator.admin.create_realm(company_name="Tmux Tea Room", customers=3, items=2, invoices=2,
                                        estimates=1, seed=11)
    grant = emulator.admin.issue_tokens(realm)
    add_tokens(db, settings, realm, grant["refresh_token"], access_token=grant["access_token"],
               expires_in=int(grant["expires_in"]))
    now = datetime.now(timezone.utc)
    with db.transaction() as conn:
        for i, entity in enumerate(ENTITY_NAMES):
            conn.execute(
                "INSERT INTO quickbooks.sync_state (realm_id, entity, last_success_at, last_run_status, row_count,"
                " next_run_at) VALUES (%s, %s, %s, 'success', %s, %s)",
                (realm, entity, now - timedelta(minutes=7), 10 + i, now + timedelta(minutes=53)))
    emulator.admin.reset_counts()

    sock = f"qbt{uuid.uuid4().hex[:10]}"
    env = dict(qbsync_env, TERM="xterm-256color", COLORTERM="")

    def tmux_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tmux, "-L", sock, "-f", "/dev/null", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=30, check=check)

    def screen() -> str:
        result = tmux_cmd("capture-pane", "-p", "-t", "console", check=False)
        return result.stdout

    def screen_dump() -> str:
        return f"screen:\n{screen()}"

    try:
        tmux_cmd("new-session", "-d", "-s", "console", "-x", "100", "-y", "30", "-e", "TERM=xterm-256color",
                 f"{QBSYNC} tui")
        wait_for(lambda: "Tmux Tea Room" in screen() and "Purchases" in screen() and "7m ago" in screen(), 30,
                 "the first paint with data", interval=0.2, details=screen_dump)
        text = screen()
        assert "active" in text
        row = next(line for line in text.splitlines() if "Tmux Tea Room" in line)
        assert any(f"{m}:" in row for m in ("59", "58", "57")), row  # access-token countdown mm:ss
        lines = text.splitlines()
        header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Group", "Entities"])
        group_rows = lines[header + 1:header + 1 + len(GROUPS)]  # one row per group, all on screen
        assert [line.split()[0] for line in group_rows] == list(GROUPS), text
        for line in group_rows:
            assert " ok " in line and "7m ago" in line, line
        assert "supervisord not reachable" in text
        assert grant["access_token"] not in text and grant["refresh_token"] not in text

        tmux_cmd("send-keys", "-t", "console", "d")
        wait_for(lambda: "28 entities" in screen(), 15, "the entity detail", interval=0.2, details=screen_dump)
        line = next(line for line in screen().splitlines() if " CompanyInfo " in line)
        assert "7m ago" in line and "success" in line, line
        tmux_cmd("send-keys", "-t", "console", "Escape")
        wait_for(lambda: "processes:" in screen(), 15, "back to the overview", interval=0.2, details=screen_dump)

        tmux_cmd("send-keys", "-t", "console", "r")
        wait_for(lambda: emulator.admin.request_counts(realm)["token:refresh_token"] >= 1, 30, "a refresh call",
                 interval=0.2, details=screen_dump)
        wait_for(lambda: "token refreshed" in screen(), 15, "the refresh notification", interval=0.2,
                 details=screen_dump)
        assert emulator.admin.request_counts(realm)["token:refresh_token"] == 1

        tmux_cmd("send-keys", "-t", "console", "q")
        wait_for(lambda: tmux_cmd("has-session", "-t", "console", check=False).returncode != 0, 15,
                 "the console to quit on q", interval=0.2, details=screen_dump)
    finally:
        tmux_cmd("kill-server", check=False)
