"""`atra status-api`: the read-only status API over a journal, and its start inside `atra live`.

``atra live`` serves it while the loop runs when ``status_api.enabled`` is true (or
``ATRA__STATUS_API__ENABLED=true``); ``atra status-api --journal J`` serves any journal on its
own (a finished replay's, or a live run's from another process: reads never block the loop).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from atra.cli import app

if TYPE_CHECKING:
    from atra.config import AtraConfig
    from atra.live.status_api import StatusSource
    from atra.live.status_server import StatusServer


def status_source(
    cfg: AtraConfig, journal_path: Path, *, orders: bool = False, replay: bool = False
) -> StatusSource:
    """What the API of ``journal_path`` serves under ``cfg`` (``orders``: ``--live``)."""
    from atra.cli.live import exit_spec
    from atra.live.status_api import StatusSource

    lv = cfg.live
    token = cfg.status_api.token
    return StatusSource(
        journal_path=journal_path,
        timeframe=lv.timeframe,
        max_age_s=lv.timeframe.ms / 1000 + lv.bar_close_delay_s + lv.cycle_deadline_s,
        mode="replay" if replay else ("live" if orders else "paper"),
        execution="orders" if orders else "paper",
        move_to_be=exit_spec(cfg).move_to_be,
        token=None if token is None else token.get_secret_value(),
    )


def start_configured(
    cfg: AtraConfig, journal_path: Path, *, orders: bool, replay: bool
) -> StatusServer | None:
    """The status API of ``atra live`` when ``status_api.enabled``; None when it is off."""
    if not cfg.status_api.enabled:
        return None
    from atra.live.status_server import start_status_server

    src = status_source(cfg, journal_path, orders=orders, replay=replay)
    server = start_status_server(src, cfg.status_api.host, cfg.status_api.port)
    typer.echo(f"status API: {server.url} (token {'required' if src.token else 'off'})")
    return server


@app.command("status-api")
def status_api_cmd(
    journal: Annotated[
        Path | None, typer.Option("--journal", help="Journal file (default live.journal_path).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (default status_api.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Port (default status_api.port; 0: any)."),
    ] = None,
) -> None:
    """Serve a journal's read-only status API (/health, /status, /trades, /profit, /signals,
    /explain, /openapi.json) until Ctrl-C. Off loopback it needs ATRA__STATUS_API__TOKEN."""
    from atra.config import load_config
    from atra.errors import DataError
    from atra.live.status_server import start_status_server
    from atra.obs import configure_logging_from

    cfg = load_config(config)
    configure_logging_from(cfg)
    path = journal if journal is not None else cfg.live.journal_path
    if not path.is_file():
        raise DataError(f"journal {path}: no such file")
    src = status_source(cfg, path)
    server = start_status_server(
        src,
        host if host is not None else cfg.status_api.host,
        port if port is not None else cfg.status_api.port,
    )
    typer.echo(f"status API of {path}: {server.url} (token {'required' if src.token else 'off'})")
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in STOP}
    try:
        while not done.wait(0.5) and server.thread.is_alive():
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


STOP = (signal.SIGINT, signal.SIGTERM)
