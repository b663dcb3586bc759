"""Serving the status API (:mod:`atra.live.status_api`) with uvicorn in a background thread.

:func:`start_status_server` binds the socket first (a taken port or a bad host is a one-line
:class:`ConfigError` at once, ``port=0`` picks a free port), then runs uvicorn on it in a
daemon thread with its own event loop, so a slow request never delays the loop's cycles and
the loop never delays a request. :meth:`StatusServer.stop` asks uvicorn to finish and joins
the thread.

Binding anywhere but loopback (127.0.0.0/8, ::1, ``localhost``) without a token is refused:
the positions and P&L of a trading account are not served to a network unauthenticated.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Final

import uvicorn

from atra.errors import ConfigError
from atra.live.status_api import StatusSource, create_app
from atra.obs import get_logger

__all__ = ["MIN_TOKEN_CHARS", "StatusServer", "check_bind", "is_loopback", "start_status_server"]

MIN_TOKEN_CHARS: Final[int] = 16
_START_TIMEOUT_S: Final[float] = 10.0

log = get_logger("atra.live.status_api")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address; any other name or address is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse serving off loopback without a token, and a token too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"ATRA__STATUS_API__TOKEN: {len(token)} characters, expected at least "
            f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; print(secrets.token_hex(24))')"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"status_api.host {host!r} is not loopback: serving off this machine needs a bearer "
            "token in ATRA__STATUS_API__TOKEN (or bind 127.0.0.1)"
        )


@dataclass(slots=True)
class StatusServer:
    """A running status API; :meth:`stop` shuts it down."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    sock: socket.socket

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"status_api.host {host!r}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"status_api.host/port: cannot serve the status API on {host}:{port}: {exc.strerror}"
        ) from None
    sock.set_inheritable(True)
    return sock


def start_status_server(
    src: StatusSource, host: str = "127.0.0.1", port: int = 8108
) -> StatusServer:
    """Serve the status API of ``src`` at ``http://host:port`` (``port=0``: a free port)
    until :meth:`StatusServer.stop`; returns once it accepts connections."""
    check_bind(host, src.token)
    sock = _bind(host, port)
    config = uvicorn.Config(
        create_app(src),
        log_config=None,  # the process's logging stays as atra configured it
        log_level="warning",  # uvicorn's start / stop lines: atra logs its own
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="atra-status-api", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError(f"status API on {host}:{port} did not start")
        time.sleep(0.01)
    out = StatusServer(server, thread, host, int(sock.getsockname()[1]), sock)
    log.info("status_api_started", url=out.url, token=src.token is not None)
    return out
