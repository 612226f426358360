"""supervisord's XML-RPC API over its unix socket (supervisord.conf: var/supervisor.sock).

`process_states` never raises: an unreachable supervisord is an empty list, so the console
and `qbsync status` degrade to "supervisord not reachable". `restart_process` raises
`SupervisorUnavailable` / `SupervisorError` with a one-line message the console shows.
Supervisor has no restart call: a restart is stop (if running) then start, like supervisorctl.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from typing import Any

__all__ = ["GROUP", "PROGRAMS", "SupervisorUnavailable", "SupervisorError", "process_states",
           "restart_process", "UnixSocketTransport"]

GROUP = "qbsync"
PROGRAMS = ("tokenup", "sync", "webhook")
STATE_TIMEOUT_S = 3.0
RESTART_TIMEOUT_S = 60.0
_NOT_RUNNING = 70  # supervisor.xmlrpc.Faults.NOT_RUNNING


class SupervisorUnavailable(Exception):
    """supervisord does not answer on its socket."""


class SupervisorError(Exception):
    """supervisord answered with a fault."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixSocketTransport(xmlrpc.client.Transport):
    """xmlrpc.client transport that speaks HTTP over a unix socket, with a timeout."""

    def __init__(self, socket_path: str | Path, timeout: float = STATE_TIMEOUT_S) -> None:
        super().__init__()
        self._socket_path = str(socket_path)
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._socket_path, self._timeout)


def _proxy(socket_path: str | Path, timeout: float) -> Any:
    return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                     transport=UnixSocketTransport(socket_path, timeout))


def process_states(socket_path: str | Path, *, timeout: float = STATE_TIMEOUT_S) -> list[dict[str, Any]]:
    """[{"name", "state", "uptime_s"}] for every program supervisord runs, or [] if unreachable.

    `name` is the program name (tokenup, sync, webhook); `state` supervisor's state name
    (RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ...); `uptime_s` seconds since
    start for a RUNNING process, else 0.
    """
    if not Path(socket_path).exists():
        return []
    try:
        infos = _proxy(socket_path, timeout).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return []
    out: list[dict[str, Any]] = []
    for info in infos:
        state = str(info.get("statename", "UNKNOWN"))
        uptime = 0
        if state == "RUNNING" and info.get("start"):
            uptime = max(0, int(info.get("now", 0)) - int(info["start"]))
        out.append({"name": str(info.get("name")), "state": state, "uptime_s": uptime,
                    "group": str(info.get("group", ""))})
    order = {name: i for i, name in enumerate(PROGRAMS)}
    out.sort(key=lambda p: (order.get(p["name"], len(order)), p["name"]))
    return out


def restart_process(socket_path: str | Path, name: str, *, timeout: float = RESTART_TIMEOUT_S) -> str:
    """Stop (if running) and start one program; returns its new state name.

    Accepts "sync" or "qbsync:sync". Raises SupervisorUnavailable when the socket does not
    answer and SupervisorError on a fault (e.g. the start failed, or an unknown name).
    """
    full = name if ":" in name else f"{GROUP}:{name}"
    if not Path(socket_path).exists():
        raise SupervisorUnavailable(f"supervisord not reachable: no socket at {socket_path}")
    proxy = _proxy(socket_path, timeout)
    try:
        try:
            proxy.supervisor.stopProcess(full, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != _NOT_RUNNING:
                raise
        proxy.supervisor.startProcess(full, True)
        return str(proxy.supervisor.getProcessInfo(full).get("statename", "UNKNOWN"))
    except xmlrpc.client.Fault as fault:
        raise SupervisorError(f"supervisord refused to restart {full}: {fault.faultString}") from None
    except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as exc:
        raise SupervisorUnavailable(f"supervisord not reachable at {socket_path}: {exc}") from None
