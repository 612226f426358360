"""Made-up but realistic values every emulator generator shares: people and trades, US addresses,
phone numbers, e-mail addresses, money in cents.

`Faker(rng)` draws everything from the one seeded `random.Random` it is given, so a company is
the same for the same seed. It also keeps the DisplayNames already used: QBO wants them unique
across customers, vendors and employees.
"""

from __future__ import annotations

import random
import unicodedata
from decimal import Decimal
from typing import Any

from services.emulator.jsontext import fmt_ts

__all__ = ["Faker", "metadata", "GIVEN", "FAMILY", "TRADES", "SUFFIXES", "ADJ", "STREETS", "USD", "ZERO", "DAY",
           "cents", "slug"]

DAY = 86400.0
USD = {"value": "USD", "name": "United States Dollar"}
ZERO = Decimal("0.00")
GIVEN = ["Amy", "Bill", "Grace", "Peter", "Kathy", "Stephanie", "José", "Zoë", "Sean", "Aoife",
         "Hiroshi", "Mei", "Olga", "Renée", "Björn", "Chloé", "Dmitri", "Fatima", "Gunnar",
         "Ingrid", "Jamal", "Keiko", "Lars", "Marta", "Noor", "Oscar", "Priya", "Quentin",
         "Rosa", "Søren", "Tomás", "Uma", "Valentina", "Wei", "Xavier", "Yusuf", "Zainab",
         "Anaïs", "Maëlle", "Joël", "Linnea", "Mateo", "Nadia", "Pablo", "Rahul", "Sven"]
FAMILY = ["Lauterbach", "Lucchini", "Pariente", "Dukes", "Paulsen", "Martini", "O'Neil",
          "D'Souza", "Müller", "García", "Núñez", "Søndergaard", "Åberg", "Nakamura", "Chen",
          "Kowalski", "Dubois", "Rossi", "Fischer", "Schröder", "Yamamoto", "Okafor", "Patel",
          "Haddad", "Ivanova", "Jensen", "Kim", "Larsen", "Moreau", "Novak", "Olsen", "Peña",
          "Quinn", "Ramírez", "Silva", "Tanaka", "Urquhart", "Vásquez", "Weiß", "Young",
          "Zielinski", "McAllister", "O'Connor", "Brontë", "Cruz", "Baker", "Ellis", "Ford"]
TRADES = ["Plumbing", "Landscaping", "Bakery", "Windsurf Shop", "Basketball Camp", "Diner",
          "Medical Supplies", "Auto Repair", "Books", "Florist", "Catering", "Bike Shop",
          "Dental", "Design Studio", "Pet Care", "Roofing", "Tailoring", "Wine Bar",
          "Hardware", "Electric", "Pottery", "Coffee Roasters", "Yoga Studio", "Print Shop"]
SUFFIXES = ["LLC", "Inc.", "& Co.", "LLP", "Group", "Partners", "Ltd."]
ADJ = ["Red Rock", "Blue Lake", "Golden Gate", "Silver Pine", "Green Valley", "Cedar Hill",
       "Ocean View", "Maple Leaf", "Sunset", "Northwind", "Harbor", "Summit", "Riverside"]
ADDRESSES = [("Tucson", "AZ", "85719"), ("Bayshore", "CA", "94326"), ("Half Moon Bay", "CA", "94213"),
             ("Palo Alto", "CA", "94303"), ("Middlefield", "CA", "94304"), ("Sunnyvale", "CA", "94086"),
             ("Portland", "OR", "97205"), ("Seattle", "WA", "98101"), ("Austin", "TX", "78701"),
             ("Boulder", "CO", "80302"), ("Brooklyn", "NY", "11201"), ("Santa Fe", "NM", "87501")]
STREETS = ["Court St.", "Finch St.", "Ocean Dr.", "Channing", "Main St.", "Red Rock Rd.",
           "S. Boise Ave", "Elm Ave.", "Pine St.", "Cedar Ln.", "Rue de la Paix", "Market St."]


def cents(value: int) -> Decimal:
    """`value` cents as a two-place Decimal (1234 -> 12.34)."""
    return Decimal(value).scaleb(-2)


def slug(text: str) -> str:
    """Lower-case ASCII letters and digits of `text` (accents folded): for e-mail and web names."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def metadata(created: float, updated: float) -> dict[str, str]:
    """An object's `MetaData`."""
    created_text = fmt_ts(created)
    return {"CreateTime": created_text, "LastUpdatedTime": created_text if updated == created else fmt_ts(updated)}


class Faker:
    """Values for one company, all from `rng`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.names: set[str] = set()
        self._addr_id = 100

    def sync_token(self, created: float, updated: float) -> str:
        """"0" for an object never changed since it was created, else a small revision number."""
        return "0" if updated == created else str(self.rng.randint(1, 3))

    def address_id(self) -> str:
        """The next physical address Id (QBO numbers them across the company)."""
        self._addr_id += 1
        return str(self._addr_id)

    def address(self) -> dict[str, Any]:
        address_id = self.address_id()
        city, state, postal = self.rng.choice(ADDRESSES)
        return {"Id": address_id, "Line1": f"{self.rng.randint(1, 9999)} {self.rng.choice(STREETS)}",
                "City": city, "CountrySubDivisionCode": state, "PostalCode": postal}

    def phone(self) -> dict[str, str]:
        return {"FreeFormNumber": f"({self.rng.randint(201, 989)}) 555-{self.rng.randint(0, 9999):04d}"}

    def email(self, given: str, family: str) -> dict[str, str]:
        local = f"{slug(given) or 'info'}.{slug(family) or 'contact'}"
        return {"Address": f"{local}@{self.rng.choice(['example.com', 'example.org', 'example.net'])}"}

    def unique(self, name: str, taken: set[str] | None = None) -> str:
        """`name`, or `name #n` when it is taken (by default among the DisplayNames used so far);
        recorded as taken."""
        used = self.names if taken is None else taken
        while name in used:
            name = f"{name.rsplit(' #', 1)[0]} #{self.rng.randint(2, 99999)}"
        used.add(name)
        return name
