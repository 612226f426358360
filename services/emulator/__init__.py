"""The local QuickBooks Online emulator: Intuit-shaped OAuth, Data API, CDC and webhooks on loopback.

`services.emulator.server.EmulatorServer` serves it; `services.emulator.admin.EmulatorAdmin`
drives it (realms, tokens, mutations, clock) over its `/_admin/` API. The app keys below are
the emulator's only valid client; they are not secrets of any real Intuit app.
"""

from __future__ import annotations

__all__ = ["EMULATOR_CLIENT_ID", "EMULATOR_CLIENT_SECRET", "EMULATOR_VERIFIER_TOKEN"]

EMULATOR_CLIENT_ID = "qbsync-emulator-client"
EMULATOR_CLIENT_SECRET = "emulator-client-secret-5f2b9c71"
EMULATOR_VERIFIER_TOKEN = "emulator-verifier-token-8d41e7a3"
