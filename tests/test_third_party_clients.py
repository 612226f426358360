"""The emulator as real clients see it: `intuit-oauth` (intuitlib) and `python-quickbooks`,
unmodified from PyPI (test extras), pointed at the emulator the way a developer points them
at a sandbox: intuitlib by its discovery-document URL, python-quickbooks by `api_url_v3`.

The emulator here runs in its default token mode, Intuit's: a refresh returns the same refresh
token for about a day and a new one after that.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import (
    AuthorizationException,
    ObjectNotFoundException,
    QuickbooksException,
    UnsupportedException,
    ValidationException,
)
from quickbooks.objects.account import Account
from quickbooks.objects.bill import Bill
from quickbooks.objects.billpayment import BillPayment
from quickbooks.objects.customer import Customer
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.journalentry import JournalEntry
from quickbooks.objects.payment import Payment
from quickbooks.objects.vendor import Vendor

from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET
from services.emulator.server import EmulatorServer

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the 302 is read, not followed
DAY = 86400


@pytest.fixture
def intuit(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EmulatorServer, str]]:
    """An emulator in Intuit's token mode with one company; yields (server, realm id)."""
    # requests-oauthlib (under python-quickbooks) refuses plain http unless told: loopback only
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    server = EmulatorServer(host="127.0.0.1", port=0).start()
    try:
        realm = server.admin.create_realm(customers=30, items=12, invoices=250, estimates=5)
        yield server, realm
    finally:
        server.stop()


def auth_client(server: EmulatorServer, secret: str = EMULATOR_CLIENT_SECRET) -> AuthClient:
    return AuthClient(EMULATOR_CLIENT_ID, secret, REDIRECT,
                      environment=f"{server.url}/.well-known/openid_configuration")


def connected(server: EmulatorServer, realm: str) -> AuthClient:
    """intuitlib's own authorization-code flow: consent URL -> redirect -> code -> tokens."""
    client = auth_client(server)
    consent = requests.get(client.get_authorization_url([Scopes.ACCOUNTING]), allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    back = parse_qs(urlsplit(consent.headers["Location"]).query)
    assert back["state"] == [client.state_token] and back["realmId"] == [realm]
    client.get_bearer_token(back["code"][0], realm_id=realm)
    return client


def quickbooks(server: EmulatorServer, client: AuthClient, realm: str) -> QuickBooks:
    qb = QuickBooks(auth_client=client, refresh_token=client.refresh_token, company_id=realm, minorversion=75)
    qb.api_url_v3 = f"{server.url}/v3"
    return qb


def test_intuitlib_discovers_the_emulator_and_runs_the_whole_token_life(intuit) -> None:
    server, realm = intuit
    client = auth_client(server)
    assert client.token_endpoint == f"{server.url}/oauth2/v1/tokens/bearer"
    assert client.auth_endpoint == f"{server.url}/connect/oauth2"
    assert client.revoke_endpoint.startswith(server.url) and client.issuer_uri.startswith(server.url)
    client = connected(server, realm)
    first_access, first_refresh = client.access_token, client.refresh_token
    assert first_access and first_refresh.startswith("AB11") and client.expires_in == 3600
    assert client.x_refresh_token_expires_in > 90 * DAY
    # Intuit's cadence: within a day the same refresh token comes back (a new access token)
    client.refresh()
    assert client.refresh_token == first_refresh and client.access_token != first_access
    server.admin.advance_clock(DAY + 3600)
    client.refresh()
    assert client.refresh_token != first_refresh
    assert client.revoke() is True
    with pytest.raises(AuthClientError) as dead:
        client.refresh()
    assert dead.value.status_code == 400 and b"invalid_grant" in dead.value.content
    with pytest.raises(AuthClientError) as wrong:
        auth_client(server, secret="not-the-secret").refresh(refresh_token=first_refresh)
    assert wrong.value.status_code == 401


def test_python_quickbooks_lists_filters_counts_gets_and_pages(intuit) -> None:
    server, realm = intuit
    admin = server.admin
    qb = quickbooks(server, connected(server, realm), realm)
    items = Item.all(qb=qb)  # SELECT *, Sku FROM Item MAXRESULTS 100
    assert sorted(i.Id for i in items) == sorted(o["Id"] for o in admin.entities(realm, "Item"))
    customers = admin.entities(realm, "Customer")
    active = Customer.filter(Active=True, qb=qb)
    assert sorted(c.Id for c in active) == sorted(o["Id"] for o in customers if o["Active"])
    quoted = next(c for c in customers if c["Active"] and "'" in c["DisplayName"])  # O'Brien's...
    named = Customer.filter(DisplayName=quoted["DisplayName"], qb=qb)
    assert [c.Id for c in named] == [quoted["Id"]]
    invoices = admin.entities(realm, "Invoice")
    assert Invoice.count(qb=qb) == len(invoices) == 250
    assert Invoice.count("Balance > '0'", qb=qb) == sum(1 for o in invoices if float(o["Balance"]) > 0)
    one = Invoice.get(invoices[7]["Id"], qb=qb)
    assert (one.Id, one.DocNumber, str(one.TotalAmt)) == (invoices[7]["Id"], invoices[7]["DocNumber"],
                                                        str(invoices[7]["TotalAmt"]))
    assert len(one.Line) == len(invoices[7]["Line"])
    seen: list[str] = []
    position = 1
    while True:
        page = Invoice.where("", order_by="Id", start_position=position, max_results=100, qb=qb)
        seen.extend(i.Id for i in page)
        if len(page) < 100:
            break
        position += 100
    assert seen == [o["Id"] for o in invoices] and position == 201


def test_python_quickbooks_lists_the_ledger(intuit) -> None:
    """Account, Vendor, Payment, Bill, BillPayment and JournalEntry through the library's own
    objects: what the emulator holds (active rows for the name lists, as `SELECT *` gives), and
    the books as the library reads them (entries balance, payments point at real invoices)."""
    server, realm = intuit
    admin = server.admin
    qb = quickbooks(server, connected(server, realm), realm)
    for cls in (Account, Vendor, Payment, Bill, BillPayment, JournalEntry):
        name = cls.qbo_object_name
        held = admin.entities(realm, name)
        listed = cls.all(max_results=1000, qb=qb)
        want = [o["Id"] for o in held if o.get("Active", True)]
        assert held and sorted(o.Id for o in listed) == sorted(want), name
    for entry in JournalEntry.all(max_results=1000, qb=qb):
        sides = {"Debit": 0, "Credit": 0}
        for line in entry.Line:
            sides[line.JournalEntryLineDetail.PostingType] += round(float(line.Amount) * 100)
        assert sides["Debit"] == sides["Credit"] > 0, entry.Id
    payment = next(p for p in Payment.all(max_results=1000, qb=qb) if p.Line)
    linked = payment.Line[0].LinkedTxn[0]
    assert linked.TxnType == "Invoice" and Invoice.get(linked.TxnId, qb=qb).Id == linked.TxnId


def test_python_quickbooks_change_data_capture(intuit) -> None:
    server, realm = intuit
    admin = server.admin
    qb = quickbooks(server, connected(server, realm), realm)
    since = datetime.fromtimestamp(admin.now() - 60, timezone.utc)
    invoice = admin.entities(realm, "Invoice")[3]["Id"]
    customer = admin.entities(realm, "Customer")[4]["Id"]
    admin.mutate(realm, "Invoice", "update", id=invoice)
    admin.mutate(realm, "Customer", "update", id=customer)
    changes = change_data_capture([Invoice, Customer], since.isoformat(), qb=qb)  # with its offset
    assert [i.Id for i in changes.Invoice] == [invoice]
    assert [c.Id for c in changes.Customer] == [customer]
    # more than 30 days back is refused the way Intuit refuses it
    with pytest.raises(ValidationException) as old:
        change_data_capture([Invoice], (since - timedelta(days=31)).isoformat(), qb=qb)
    assert old.value.error_code == 2010 and "older than fixed days" in old.value.detail


def test_faults_reach_python_quickbooks_as_its_own_exceptions(intuit) -> None:
    server, realm = intuit
    admin = server.admin
    qb = quickbooks(server, connected(server, realm), realm)
    with pytest.raises(ObjectNotFoundException) as missing:  # 610
        Invoice.get("99999", qb=qb)
    assert missing.value.error_code == 610
    with pytest.raises(ValidationException) as too_many:  # 4000
        Invoice.where("", max_results=1500, qb=qb)
    assert too_many.value.error_code == 4000 and "1000" in too_many.value.detail
    with pytest.raises(UnsupportedException) as unknown:  # no such resource: Intuit's Fault, code 500
        qb.get(f"{server.url}/v3/company/{realm}/widget/1")
    assert unknown.value.error_code == 500 and "Could not find resource" in unknown.value.detail
    admin.configure(fail_rate_429=1.0)
    with pytest.raises(QuickbooksException) as throttled:  # the XML 429: the library cannot read it as JSON
        Item.all(qb=qb)
    assert type(throttled.value) is QuickbooksException and "ThrottleExceeded" in throttled.value.message
    admin.configure(fail_rate_429=0.0)
    admin.expire_access_tokens(realm)
    with pytest.raises(AuthorizationException) as expired:  # 401
        Item.all(qb=qb)
    assert expired.value.error_code == 401 and "Token expired" in expired.value.detail
