"""The locked refresh path (services/tokens/vault.py) against real PostgreSQL and the emulator over loopback."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from support.realms import create_realm_with_tokens

from services.core.config import load_settings
from services.core.errors import InvalidClient, NeedsReauth, TransportError
from services.tokens.vault import (
    TokenRow,
    access_token_for,
    active_realms,
    read_token,
    refresh_realm,
)


def token_row(db, realm_id: str) -> TokenRow:
    with db.transaction() as conn:
        row = read_token(conn, realm_id)
    assert row is not None
    return row


def refresh_calls(emulator, realm_id: str) -> int:
    return emulator.admin.request_counts(realm_id).get("token:refresh_token", 0)


def test_refresh_stores_the_rotated_token_and_measures_expiry_from_before_the_post(db, settings, emulator):
    realm_id, issued = create_realm_with_tokens(db, settings, emulator, access_expires_in=300)
    emulator.admin.configure(latency_ms=400)
    with db.transaction() as conn:
        before = conn.execute("SELECT clock_timestamp()").fetchone()[0]

    result = refresh_realm(db, settings, realm_id, reason="test")

    assert result.refreshed and not result.reused
    row = token_row(db, realm_id)
    newest = emulator.admin.newest_tokens(realm_id)
    assert row.refresh_token == newest["refresh_token"] != issued["refresh_token"]
    assert row.access_token == newest["access_token"] == result.access_token
    assert row.status == "active" and row.last_error is None
    assert row.refresh_token_expires_at is not None and row.refresh_token_hard_expires_at is not None
    assert row.refresh_token_hard_expires_at - before > timedelta(days=365)
    # expires_in (3600) counts from the moment before the POST, not from when the answer was stored:
    # with 400 ms of latency the stored expiry lies before "stored at + 3600 s".
    assert before + timedelta(seconds=3598) <= row.expires_at
    assert row.expires_at <= row.last_refreshed_at + timedelta(seconds=3600) - timedelta(milliseconds=300)
    assert refresh_calls(emulator, realm_id) == 1
    with db.transaction() as conn:
        events = conn.execute("SELECT event FROM quickbooks.token_events WHERE realm_id = %s ORDER BY id",
                              (realm_id,)).fetchall()
    assert [e[0] for e in events] == ["added", "refreshed"]


def test_intuits_same_refresh_token_for_a_day_is_kept_and_rotation_after_it_is_stored(db, settings, emulator):
    emulator.admin.configure(refresh_token_reuse_seconds=86400)  # Intuit's cadence (the suite runs strict)
    realm_id, issued = create_realm_with_tokens(db, settings, emulator, access_expires_in=300)
    same = refresh_realm(db, settings, realm_id, reason="test")
    row = token_row(db, realm_id)
    assert same.refreshed and row.refresh_token == issued["refresh_token"]  # Intuit sent the same one back
    assert row.access_token == emulator.admin.newest_tokens(realm_id)["access_token"] != issued["access_token"]
    assert row.status == "active" and row.last_error is None
    emulator.admin.advance_clock(86400 + 60)
    rotated = refresh_realm(db, settings, realm_id, force=True, reason="test")
    row = token_row(db, realm_id)
    assert rotated.refreshed and row.refresh_token == emulator.admin.newest_tokens(realm_id)["refresh_token"]
    assert row.refresh_token != issued["refresh_token"] and row.status == "active"
    assert refresh_calls(emulator, realm_id) == 2


def test_a_fresh_token_is_not_refreshed_unless_forced(db, settings, emulator):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    refresh_realm(db, settings, realm_id, force=True)  # now refreshed recently and an hour left
    assert refresh_calls(emulator, realm_id) == 1

    quiet = refresh_realm(db, settings, realm_id)
    assert not quiet.refreshed and not quiet.reused
    assert refresh_calls(emulator, realm_id) == 1

    forced = refresh_realm(db, settings, realm_id, force=True)
    assert forced.refreshed
    assert refresh_calls(emulator, realm_id) == 2
    assert token_row(db, realm_id).refresh_token == emulator.admin.newest_tokens(realm_id)["refresh_token"]


def test_a_refresh_token_unused_for_24_hours_is_refreshed(db, settings, emulator):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    refresh_realm(db, settings, realm_id, force=True)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET last_refreshed_at = now() - interval '25 hours'"
                     " WHERE realm_id = %s", (realm_id,))
    result = refresh_realm(db, settings, realm_id)
    assert result.refreshed and "24 h" in result.reason


def test_stale_access_token_refreshes_once_then_reuses(db, settings, emulator):
    realm_id, issued = create_realm_with_tokens(db, settings, emulator)
    first = refresh_realm(db, settings, realm_id, stale_access_token=issued["access_token"], reason="401")
    assert first.refreshed
    # A second caller that saw the same rejected token finds it already replaced.
    second = refresh_realm(db, settings, realm_id, stale_access_token=issued["access_token"], reason="401")
    assert second.reused and not second.refreshed
    assert second.access_token == first.access_token
    assert refresh_calls(emulator, realm_id) == 1


def test_invalid_grant_marks_needs_reauth_records_it_and_stops_calling(db, settings, emulator):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    emulator.admin.invalidate_refresh_tokens(realm_id)

    with pytest.raises(NeedsReauth):
        refresh_realm(db, settings, realm_id, force=True)

    row = token_row(db, realm_id)
    assert row.status == "needs_reauth"
    assert "invalid_grant" in row.last_error
    with db.transaction() as conn:
        errors = conn.execute("SELECT service, code, message FROM quickbooks.errors WHERE realm_id = %s",
                              (realm_id,)).fetchall()
        events = [r[0] for r in conn.execute("SELECT event FROM quickbooks.token_events WHERE realm_id = %s",
                                             (realm_id,))]
        assert active_realms(conn) == []
    assert [(e[0], e[1]) for e in errors] == [("tokenup", "invalid_grant")]
    assert "needs_reauth" in events
    calls = refresh_calls(emulator, realm_id)
    with pytest.raises(NeedsReauth):
        refresh_realm(db, settings, realm_id, force=True)
    with pytest.raises(NeedsReauth):
        access_token_for(db, settings, realm_id)
    assert refresh_calls(emulator, realm_id) == calls


def test_invalid_client_is_a_configuration_error_and_keeps_the_tokens(db, settings, emulator, qbsync_env):
    realm_id, issued = create_realm_with_tokens(db, settings, emulator)
    wrong = load_settings({**qbsync_env, "QBO_CLIENT_SECRET": "not-the-secret-123"}, dotenv=False)

    with pytest.raises(InvalidClient) as caught:
        refresh_realm(db, wrong, realm_id, force=True)

    assert "not-the-secret-123" not in caught.value.one_line()
    row = token_row(db, realm_id)
    assert row.status == "active" and row.refresh_token == issued["refresh_token"]
    assert "invalid_client" in row.last_error
    with db.transaction() as conn:
        codes = [r[0] for r in conn.execute("SELECT code FROM quickbooks.errors WHERE realm_id = %s", (realm_id,))]
    assert codes == ["invalid_client"]


def test_an_unreachable_token_endpoint_is_retriable_and_changes_nothing(db, settings, emulator, qbsync_env):
    realm_id, issued = create_realm_with_tokens(db, settings, emulator)
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    offline = load_settings({**qbsync_env, "QBO_TOKEN_URL": f"http://127.0.0.1:{port}/token"}, dotenv=False)

    with pytest.raises(TransportError):
        refresh_realm(db, offline, realm_id, force=True)

    row = token_row(db, realm_id)
    assert row.status == "active" and row.refresh_token == issued["refresh_token"]
    assert "cannot reach the token endpoint" in (row.last_error or "")
    assert refresh_realm(db, settings, realm_id, force=True).refreshed


def test_access_token_for_returns_a_fresh_token_and_refreshes_a_dying_one(db, settings, emulator):
    realm_id, issued = create_realm_with_tokens(db, settings, emulator)
    assert access_token_for(db, settings, realm_id) == (issued["access_token"], "")
    assert refresh_calls(emulator, realm_id) == 0

    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET expires_at = now() + interval '30 seconds' WHERE realm_id = %s",
                     (realm_id,))
    token, _ = access_token_for(db, settings, realm_id)
    assert token == emulator.admin.newest_tokens(realm_id)["access_token"] != issued["access_token"]
    assert refresh_calls(emulator, realm_id) == 1


def test_access_token_for_refuses_a_disconnected_realm(db, settings, emulator):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET status = 'disconnected', is_active = false WHERE realm_id = %s",
                     (realm_id,))
    with pytest.raises(NeedsReauth):
        access_token_for(db, settings, realm_id)
    with pytest.raises(NeedsReauth):
        refresh_realm(db, settings, "no-such-realm", force=True)


def test_token_add_fetches_the_company_name_when_the_access_token_works(db, settings, emulator):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator, company_name="Brasserie L'Écluse")
    with db.transaction() as conn:
        name, raw = conn.execute("SELECT name, raw FROM quickbooks.companies WHERE id = %s", (realm_id,)).fetchone()
    assert name == "Brasserie L'Écluse"
    assert raw["CompanyName"] == name


def test_token_rows_and_results_never_show_tokens(db, settings, emulator):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    result = refresh_realm(db, settings, realm_id, force=True)
    row = token_row(db, realm_id)
    for shown in (repr(row), str(row), repr(result), str(result)):
        assert row.access_token not in shown and row.refresh_token not in shown
    assert {f.name for f in dataclasses.fields(result)} >= {"refreshed", "reused", "realm_id", "access_expires_at"}
