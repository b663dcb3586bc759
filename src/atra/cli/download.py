"""`atra data download`: candles (and perp funding) from Binance into the store."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from atra.cli.data import BoundsConfig, data_app, store_bounds
from atra.cli.options import DEFAULT_DATA_DIR, DataDir
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, TransientExchangeError

if TYPE_CHECKING:  # the HTTP client stack loads when the command runs
    from atra.core.bounds import Limits
    from atra.data.download import DownloadReport, DownloadSpec

_EXCHANGES = ("binance",)


@dataclass(frozen=True, slots=True)
class _Limits:
    timeout_s: float
    retries: int
    max_connections: int
    deadline_s: float | None
    symbol_deadline_s: float | None


@data_app.command("download")
def download_cmd(
    symbols: Annotated[
        str, typer.Option("--symbols", help="Comma-separated, e.g. BTCUSDT,ETHUSDT")
    ],
    since: Annotated[str, typer.Option("--since", help="First bar (UTC date or ISO time).")],
    until: Annotated[
        str | None, typer.Option("--until", help="End, exclusive (default: now).")
    ] = None,
    exchange: Annotated[str, typer.Option("--exchange")] = "binance",
    market: Annotated[str, typer.Option("--market", help="spot or perp")] = "spot",
    timeframe: Annotated[str, typer.Option("--timeframe")] = "1h",
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Exchange REST base URL.")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    timeout_s: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds per request, connect to last byte (whole-request deadline)."
        ),
    ] = 10.0,
    deadline_s: Annotated[
        float | None,
        typer.Option("--deadline", help="Seconds for the whole download (default: no bound)."),
    ] = None,
    symbol_deadline_s: Annotated[
        float | None,
        typer.Option("--symbol-deadline", help="Seconds per symbol (default: no bound)."),
    ] = None,
    retries: Annotated[int, typer.Option("--retries", help="Attempts per request.")] = 5,
    max_connections: Annotated[int, typer.Option("--max-connections")] = 10,
    config: BoundsConfig = None,
) -> None:
    """Download candles into the store: all symbols at once, resumable, rate limited."""
    if exchange.strip().lower() not in _EXCHANGES:
        raise ConfigError(f"--exchange {exchange!r}: supported: {', '.join(_EXCHANGES)}")
    if retries < 1 or max_connections < 1:
        raise ConfigError("--retries and --max-connections must be >= 1")
    for flag, value in (
        ("--timeout", timeout_s),
        ("--deadline", deadline_s),
        ("--symbol-deadline", symbol_deadline_s),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag} {value!r}: expected a finite number of seconds above 0")
    from atra.data.download import DownloadSpec, parse_utc_ms, split_symbols

    bounds = store_bounds(config)
    spec = DownloadSpec(
        exchange="binance",
        market=Market.parse(market),
        symbols=split_symbols(symbols),
        timeframe=Timeframe.parse(timeframe),
        since_ms=parse_utc_ms(since, "--since"),
        until_ms=parse_utc_ms(until, "--until") if until is not None else None,
    )
    console = Console(stderr=True)
    limits = _Limits(timeout_s, retries, max_connections, deadline_s, symbol_deadline_s)
    report = asyncio.run(_run(spec, base_url, data_dir, limits, console, bounds))
    _finish(spec, report)


def _finish(spec: DownloadSpec, report: DownloadReport) -> None:
    """One line per symbol on stdout, then the first failure as a one-line error."""
    for item in report.symbols:
        state = "failed" if item.error is not None else "ok"
        line = f"{item.symbol}: {state}, {item.candles_added} candles added"
        if spec.market is Market.PERP:
            line += f", {item.funding_added} funding events added"
        typer.echo(line)
    report.raise_for_errors()


async def _run(
    spec: DownloadSpec,
    base_url: str | None,
    data_dir: Path,
    limits: _Limits,
    console: Console,
    bounds: Limits,
) -> DownloadReport:
    from atra.adapters.exchange.client import BinanceClient
    from atra.adapters.store import CandleStore
    from atra.data.download import download

    store = CandleStore(data_dir, limits=bounds)  # created by the first write
    client = BinanceClient(
        spec.market,
        base_url=base_url,
        timeout_s=limits.timeout_s,
        max_attempts=limits.retries,
        max_connections=limits.max_connections,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    quiet = not console.is_terminal  # a log or a pipe gets the result lines and errors only
    with Progress(*columns, console=console, transient=False, disable=quiet) as bar:
        tasks: dict[str, TaskID] = {
            s: bar.add_task(f"{s} {spec.timeframe}", total=None) for s in spec.symbols
        }

        def progress(symbol: str, done: int, total: int) -> None:
            bar.update(tasks[symbol], completed=done, total=total)

        async with client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = limits.deadline_s
            try:
                async with asyncio.timeout(deadline):
                    await client.sync_limits()
            except TimeoutError:
                raise TransientExchangeError(
                    f"binance {spec.market} exchangeInfo: not finished within the download "
                    f"deadline of {deadline:g} s; nothing was downloaded"
                ) from None
            if deadline is not None:  # what is left of it for the candles
                deadline = max(1e-3, deadline - (loop.time() - started))
            return await download(
                client,
                store,
                spec,
                now_ms=int(time.time() * 1000),
                progress=progress,
                deadline_s=deadline,
                symbol_deadline_s=limits.symbol_deadline_s,
            )
