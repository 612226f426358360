"""Where the recorded QBO payloads live: ../shared/qbo/samples beside the checkout (as in CI)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES"]

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "qbo" / "samples"
