"""Worker runtime shared by tokenup, sync and webhook: SIGTERM and PM2's restart semantics.

Supervisor restarts a dead process at once and counts only failed *starts*, so the worker
carries PM2's behaviour itself (SPEC section 2):
- a configuration error exits at once with status 2 (supervisord marks FATAL after its retries);
- any other failure is logged, then the worker waits RESTART_DELAY_SECONDS (SIGTERM cuts the
  wait short) and exits 1, so supervisord's immediate restart happens after PM2's delay;
- SIGTERM/SIGINT set a stop flag: the loop finishes its current unit of work and exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from services.core.errors import ConfigError

__all__ = ["Stop", "run_worker", "EXIT_OK", "EXIT_RUNTIME", "EXIT_CONFIG"]

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


class Stop:
    """A stop flag that SIGTERM/SIGINT set; `wait(s)` sleeps unless stopped (returns True if stopped)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(max(0.0, seconds))

    def install_signal_handlers(self) -> None:
        def _handler(signum: int, _frame: object) -> None:
            logging.getLogger("qbsync").info("received %s: finishing current work, then exiting",
                                             signal.Signals(signum).name)
            self.set()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)


def _one_line(exc: BaseException) -> str:
    """`Type: what happened`, never a traceback (core.errors.describe, with the class named)."""
    from services.core.errors import QBSyncError, describe

    return f"{type(exc).__name__}: {describe(exc)}" if isinstance(exc, QBSyncError) else describe(exc)


def run_worker(name: str, restart_delay_s: float, body: Callable[[Stop], None],
               stop: Stop | None = None) -> int:
    """Run `body(stop)` with PM2 semantics; return the process exit status.

    0: the body returned (after SIGTERM). 2: ConfigError, logged on one line, at once.
    1: any other exception, logged on one line (traceback at DEBUG), after `restart_delay_s`
    unless SIGTERM/SIGINT arrives first (then at once)."""
    log = logging.getLogger(name)
    stop = stop or Stop()
    stop.install_signal_handlers()
    try:
        body(stop)
        return EXIT_OK
    except ConfigError as exc:
        log.error("configuration error: %s", exc.one_line())
        return EXIT_CONFIG
    except Exception as exc:  # the last line of defence of a supervised worker
        log.error("%s failed: %s", name, _one_line(exc))
        log.debug("%s failure traceback", name, exc_info=True)  # LOG_LEVEL=DEBUG shows where
        if stop.requested:
            return EXIT_RUNTIME
        log.info("waiting %.0f s (restart delay) before exiting", restart_delay_s)
        stop.wait(restart_delay_s)
        return EXIT_RUNTIME
