"""Logging: PM2-style timestamps on every line and redaction of every secret.

Every secret qbsync reads (client secret, verifier token, access and refresh tokens,
database password) is registered with `register_secret`; the filter installed by
`setup_logging` replaces registered values, and anything that looks like a bearer token
or a `refresh_token=`/`access_token=` pair, before a record reaches any handler.
`redact()` is the same scrubbing for text that goes elsewhere (the errors table, the console).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from datetime import datetime

__all__ = ["register_secret", "redact", "setup_logging", "PM2Formatter", "pm2_timestamp", "REDACTED"]

REDACTED = "[REDACTED]"
_secrets: set[str] = set()
_lock = threading.Lock()
_PATTERNS = [
    # an Authorization header's scheme and credentials; not the word inside a URL (`…/tokens/bearer`)
    re.compile(r"(?i)(?<![/\w])(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:access|refresh|id)_token|client_secret|verifier_token|password)"
               r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
]


_KEY = 6  # every registered secret is at least this long; the index below is keyed by that many characters
_by_prefix: dict[str, tuple[str, ...]] = {}  # a secret's first _KEY characters -> the secrets starting so


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is scrubbed wherever it would be written."""
    if value and len(value) >= _KEY:
        with _lock:
            if value not in _secrets:
                _secrets.add(value)
                key = value[:_KEY]
                _by_prefix[key] = (*_by_prefix.get(key, ()), value)


def redact(text: object) -> str:
    """`text` as a string with every registered secret and token-looking value removed.

    The secrets are found through their first characters (one dict lookup per position of the
    text), not by scanning the text once per secret: a sync process serving thousands of realms
    knows thousands of tokens, and every log line passes through here."""
    out = str(text)
    index = _by_prefix  # replaced never, only grown under the lock; reads of a dict are atomic
    if index and len(out) >= _KEY:
        found = {secret for i in range(len(out) - _KEY + 1) for secret in index.get(out[i:i + _KEY], ())}
        for secret in sorted(found, key=len, reverse=True):
            if secret in out:
                out = out.replace(secret, REDACTED)
    out = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", out)
    return out


def pm2_timestamp(created: float | None = None) -> str:
    """PM2's log_date_format 'YYYY-MM-DD HH:mm Z', e.g. `2026-11-22 14:05 +00:00`."""
    stamp = (datetime.fromtimestamp(created) if created is not None else datetime.now()).astimezone()
    offset = stamp.strftime("%z")
    return stamp.strftime("%Y-%m-%d %H:%M ") + f"{offset[:3]}:{offset[3:]}"


class PM2Formatter(logging.Formatter):
    """`2026-11-22 14:05 +00:00 INFO tokenup: message`."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return pm2_timestamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        record.msg = redact(record.msg)
        return True


def setup_logging(service: str, level: str = "INFO") -> logging.Logger:
    """Configure the root logger for one process: INFO and below to stdout, WARNING+ to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = PM2Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)  # -> logs/<program>.out.log
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)  # -> logs/<program>.err.log
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
        handler.addFilter(_RedactFilter())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "waitress.queue", "psycopg.pool", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(service)
