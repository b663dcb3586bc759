"""Download candles (and perp funding) from an exchange into the candle store.

Every symbol runs concurrently; all requests share the client's rate limiter. Each symbol
resumes after its last stored candle, fetches its pages in chunks (the pages of a chunk at
once) and writes each chunk through :meth:`CandleStore.write_candles`, which validates and
merges atomically. A failure or a cancellation therefore leaves every symbol's store valid:
as before, or with whole chunks added, never half a chunk; a rerun continues where it stopped.
A symbol that fails does not stop the others; an IP ban (HTTP 418) stops everything.

Deadlines: every request has its own whole-request deadline (the client's ``timeout_s``);
``symbol_deadline_s`` bounds one symbol and ``deadline_s`` the whole download (real seconds).
A symbol still running when its deadline passes fails with a one-line
:class:`~atra.errors.TransientExchangeError` naming what was stored; the chunks already
written stay, and a rerun resumes after them.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from atra.adapters.exchange.client import ExchangeClient, first_error, plan_pages
from atra.adapters.store import CandleStore, DatasetKey
from atra.core.symbols import split_symbols as parse_symbol_list
from atra.core.types import Market, Timeframe
from atra.errors import AtraError, ConfigError, IPBanned, TransientExchangeError

ProgressFn = Callable[[str, int, int], None]
"""``progress(symbol, bars_done, bars_expected)``, called after every stored chunk."""


class RangeClient(ExchangeClient, Protocol):
    """An exchange client that can also fetch whole ranges (``BinanceClient`` does)."""

    async def fetch_klines_range(
        self,
        symbol: str,
        timeframe: Timeframe,
        start_ms: int,
        end_ms: int,
        *,
        max_parallel: int | None = None,
    ) -> pd.DataFrame: ...

    async def fetch_funding_range(
        self, symbol: str, start_ms: int, end_ms: int
    ) -> pd.DataFrame: ...


@dataclass(frozen=True, slots=True)
class DownloadSpec:
    """What to download: ``since_ms <= open_time < until_ms`` (``None``: up to now)."""

    exchange: str
    market: Market
    symbols: tuple[str, ...]
    timeframe: Timeframe
    since_ms: int
    until_ms: int | None = None
    funding: bool = True
    """Also download funding history (perps only)."""

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("no symbols to download")
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError(f"symbols listed twice: {', '.join(self.symbols)}")
        if self.until_ms is not None and self.since_ms >= self.until_ms:
            raise ConfigError(
                f"--since {ms_to_text(self.since_ms)} is not before --until "
                f"{ms_to_text(self.until_ms)}"
            )


@dataclass(frozen=True, slots=True)
class SymbolReport:
    """What happened to one symbol."""

    symbol: str
    candles_added: int
    funding_added: int
    error: AtraError | None = None


@dataclass(frozen=True, slots=True)
class DownloadReport:
    """Per-symbol outcome of a download, in the order the symbols were given."""

    symbols: tuple[SymbolReport, ...]

    @property
    def failed(self) -> tuple[SymbolReport, ...]:
        return tuple(s for s in self.symbols if s.error is not None)

    def raise_for_errors(self) -> None:
        """Raise the first symbol's error (same type), naming how many symbols failed."""
        failed = self.failed
        if not failed:
            return
        first = failed[0]
        assert first.error is not None
        err = copy.copy(first.error)
        note = f"{len(failed)} of {len(self.symbols)} symbols failed; the others are stored"
        err.args = (f"{first.symbol}: {first.error} ({note})",)
        raise err


def ms_to_text(ts_ms: int) -> str:
    """``1704067200000`` -> ``2024-01-01 00:00``."""
    return pd.Timestamp(ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


def parse_utc_ms(text: str, flag: str) -> int:
    """``2024-01-01``, ``2024-01-01T12:00`` (UTC unless an offset is given) or epoch ms."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        ts = pd.Timestamp(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{flag} {text!r}: expected a date like 2024-01-01") from exc
    if pd.isna(ts):
        raise ConfigError(f"{flag} {text!r}: expected a date like 2024-01-01")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def split_symbols(text: str) -> tuple[str, ...]:
    """``"btcusdt, ETHUSDT"`` -> ``("BTCUSDT", "ETHUSDT")``, each checked by the one symbol
    validator (:func:`atra.core.symbols.check_symbol`)."""
    syms = parse_symbol_list(text)
    if not syms:
        raise ConfigError(f"--symbols {text!r}: expected a list like BTCUSDT,ETHUSDT")
    return syms


async def download(
    client: RangeClient,
    store: CandleStore,
    spec: DownloadSpec,
    *,
    now_ms: int,
    chunk_pages: int = 10,
    progress: ProgressFn | None = None,
    sequential: bool = False,
    deadline_s: float | None = None,
    symbol_deadline_s: float | None = None,
) -> DownloadReport:
    """Download ``spec`` into ``store``; ``now_ms`` bounds an open-ended range (closed bars).

    ``sequential=True`` issues the very same requests one at a time (a baseline to compare).
    ``deadline_s`` bounds the whole call, ``symbol_deadline_s`` each symbol (``None``: no
    bound beyond the client's per-request deadline and retries).
    """
    for name, value in (("deadline", deadline_s), ("symbol deadline", symbol_deadline_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} {value!r}: expected a finite number of seconds above 0")
    loop = asyncio.get_running_loop()
    command_end = loop.time() + deadline_s if deadline_s is not None else math.inf
    step = spec.timeframe.ms
    end = (now_ms // step) * step
    if spec.until_ms is not None:
        end = min(end, spec.until_ms)
    reports: dict[str, SymbolReport] = {}

    async def one(symbol: str) -> None:
        tally = _Tally()
        symbol_end = loop.time() + symbol_deadline_s if symbol_deadline_s else math.inf
        which = "symbol deadline" if symbol_end < command_end else "download deadline"
        limit_s = symbol_deadline_s if symbol_end < command_end else deadline_s
        end_at = min(symbol_end, command_end)
        try:
            async with asyncio.timeout_at(end_at if math.isfinite(end_at) else None):
                await _download_symbol(
                    client,
                    store,
                    spec,
                    symbol,
                    end,
                    chunk_pages,
                    progress,
                    1 if sequential else None,
                    tally,
                )
            reports[symbol] = SymbolReport(symbol, tally.candles, tally.funding)
        except IPBanned:
            raise
        except TimeoutError:
            err = TransientExchangeError(
                f"not finished within the {which} of {limit_s:g} s; {tally.candles} candles "
                f"and {tally.funding} funding events stored, a rerun resumes after them"
            )
            reports[symbol] = SymbolReport(symbol, tally.candles, tally.funding, err)
        except AtraError as exc:
            reports[symbol] = SymbolReport(symbol, tally.candles, tally.funding, exc)

    if sequential:
        for symbol in spec.symbols:
            await one(symbol)
        return DownloadReport(tuple(reports[s] for s in spec.symbols))
    try:
        async with asyncio.TaskGroup() as tg:
            for symbol in spec.symbols:
                tg.create_task(one(symbol))
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return DownloadReport(tuple(reports[s] for s in spec.symbols))


async def _download_symbol(
    client: RangeClient,
    store: CandleStore,
    spec: DownloadSpec,
    symbol: str,
    end_ms: int,
    chunk_pages: int,
    progress: ProgressFn | None,
    max_parallel: int | None,
    tally: _Tally,
) -> None:
    key = DatasetKey(spec.exchange, spec.market, symbol, spec.timeframe)
    step = spec.timeframe.ms
    last = store.last_open_time(key)
    start = spec.since_ms if last is None or last < spec.since_ms else last + step
    pages = plan_pages(start, end_ms, step, client.max_klines)
    expected = max(0, -(-(end_ms - start) // step))
    source = f"{spec.exchange} {spec.market} {symbol} {spec.timeframe}"
    done = 0
    if progress is not None:
        progress(symbol, 0, expected)
    for chunk in _chunks(pages, chunk_pages):
        chunk_start, chunk_end = chunk[0][0], chunk[-1][1] + 1
        frame = await client.fetch_klines_range(
            symbol, spec.timeframe, chunk_start, chunk_end, max_parallel=max_parallel
        )
        if not frame.empty:
            tally.candles += store.write_candles(key, frame, source=source).rows_added
        done += (chunk_end - chunk_start) // step
        if progress is not None:
            progress(symbol, min(done, expected), expected)
    if spec.market is Market.PERP and spec.funding:
        last_f = store.last_funding_time(spec.exchange, symbol)
        f_start = spec.since_ms if last_f is None or last_f < spec.since_ms else last_f + 1
        if f_start < end_ms:
            funding = await client.fetch_funding_range(symbol, f_start, end_ms)
            if not funding.empty:
                result = store.write_funding(
                    spec.exchange, symbol, funding, source=f"{source} funding"
                )
                tally.funding += result.rows_added


@dataclass(slots=True)
class _Tally:
    """Rows one symbol has stored so far (kept when a deadline cuts it short)."""

    candles: int = 0
    funding: int = 0


def _chunks(pages: Sequence[tuple[int, int]], size: int) -> list[Sequence[tuple[int, int]]]:
    n = max(1, size)
    return [pages[i : i + n] for i in range(0, len(pages), n)]
