"""Closed bars for the live loop from Binance's kline WebSocket streams (``live.feed = "ws"``).

:class:`StreamBars` runs one :class:`~atra.adapters.exchange.stream.KlineStream` (a combined
stream of every symbol) in the background and keeps the closed bars it delivers until the
loop's candle feed takes them (:meth:`StreamBars.take`). A cycle takes, for each symbol, the
bars after its in-memory window up to the bar just closed, as soon as all of them have
arrived; a bar still missing after ``wait_s`` (a dropped message, a connection down) is
fetched over REST by the feed (:meth:`~atra.live.feed.CandleFeed` does it through the shared
limiter), and the stream is told so its next backfill and its duplicate check start after it
(:meth:`StreamBars.note`). The window's first fill always comes over REST.

Each bar is decided once: the feed appends only bars after a window's last one, and the
journal's per-symbol last processed bar makes every bar a single decision, whichever path
it came by.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import numpy as np
import pandas as pd

from atra.adapters.exchange.client import ExchangeClient
from atra.adapters.exchange.stream import (
    MAX_CONNECTION_S,
    MIN_CONNECT_INTERVAL_S,
    ClosedKline,
    KlineStream,
)
from atra.config_live import LiveConfig
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError
from atra.obs import get_logger

FeedKind = Literal["ws", "rest"]

log = get_logger("atra.live.stream_feed")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the WebSocket feed runs. ``wait_s``: how long a cycle waits for a symbol's bars
    on the stream before fetching them over REST (must leave the REST fetch time inside the
    cycle deadline)."""

    url: str | None = None
    """Stream base URL (None: Binance's for the market)."""
    wait_s: float = 5.0
    heartbeat_s: float = 30.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_connection_s: float = MAX_CONNECTION_S
    min_interval_s: float = MIN_CONNECT_INTERVAL_S
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("wait_s", "heartbeat_s", "backoff_s", "max_backoff_s", "max_connection_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"stream {name} must be a finite number > 0, got {value}")
        if not (self.min_interval_s >= 0 and math.isfinite(self.min_interval_s)):
            raise ConfigError(f"stream min_interval_s must be >= 0, got {self.min_interval_s}")


class StreamBars:
    """The closed bars of ``symbols`` from a kline stream, held until a cycle takes them."""

    def __init__(
        self,
        market: Market,
        symbols: Sequence[str],
        timeframe: Timeframe,
        *,
        backfill: ExchangeClient,
        settings: StreamSettings | None = None,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or StreamSettings()
        self.timeframe = timeframe
        self.step_ms = timeframe.ms
        self._bars: dict[str, dict[int, ClosedKline]] = {s: {} for s in symbols}
        self._arrived: dict[str, asyncio.Event] = {s: asyncio.Event() for s in symbols}
        s = self.settings
        self.stream = KlineStream(
            market,
            symbols,
            timeframe,
            self._on_bar,
            base_url=s.url,
            backfill=backfill,
            heartbeat_s=s.heartbeat_s,
            backoff_s=s.backoff_s,
            max_backoff_s=s.max_backoff_s,
            max_connection_s=s.max_connection_s,
            min_interval_s=s.min_interval_s,
            seed=s.seed,
            now_s=now_s,
        )
        self.taken = 0
        self.rest_fallbacks = 0
        self._task: asyncio.Task[None] | None = None

    def _on_bar(self, bar: ClosedKline) -> None:
        self._bars[bar.symbol][bar.open_time] = bar
        self._arrived[bar.symbol].set()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.stream.run(), name="kline-stream")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stream.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once the stream is connected (within ``timeout_s``)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.stream.connected.wait()
        except TimeoutError:
            return False
        return True

    def note(self, symbol: str, last_ms: int) -> None:
        """``symbol``'s bars up to ``last_ms`` came over REST: forget held copies, and let the
        stream's backfill and duplicate check start after them."""
        held = self._bars[symbol]
        for t in [t for t in held if t <= last_ms]:
            del held[t]
        self.stream.seen_through(symbol, last_ms)

    async def take(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame | None:
        """``symbol``'s bars with open times ``start_ms..end_ms`` as a candle frame once all
        have arrived, or None when one is still missing after ``wait_s`` (the caller fetches
        them over REST and calls :meth:`note`)."""
        if self._task is not None and self._task.done():
            self._task.result()  # the stream task died: raise its error
        step = self.step_ms
        want = range(start_ms, end_ms + 1, step)
        held = self._bars[symbol]
        arrived = self._arrived[symbol]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.wait_s
        while not all(t in held for t in want):
            arrived.clear()
            left = deadline - loop.time()
            if left <= 0:
                self.rest_fallbacks += 1
                missing = [t for t in want if t not in held]
                log.warning(
                    "stream_bars_missing",
                    symbol=symbol,
                    missing=len(missing),
                    first_missing=missing[0],
                    wait_s=self.settings.wait_s,
                )
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await arrived.wait()
        bars = [held.pop(t) for t in want]
        for t in [t for t in held if t < start_ms]:  # older than the window's end: not needed
            del held[t]
        self.taken += len(bars)
        self.stream.seen_through(symbol, end_ms)
        return pd.DataFrame(
            {
                "open_time": np.array([b.open_time for b in bars], np.int64),
                "open": np.array([b.open for b in bars], np.float64),
                "high": np.array([b.high for b in bars], np.float64),
                "low": np.array([b.low for b in bars], np.float64),
                "close": np.array([b.close for b in bars], np.float64),
                "volume": np.array([b.volume for b in bars], np.float64),
            }
        )


@contextlib.asynccontextmanager
async def live_stream(
    live: LiveConfig, client: ExchangeClient, symbols: Sequence[str], timeframe: Timeframe
) -> AsyncIterator[StreamBars | None]:
    """The kline stream of a live run with ``live.feed = "ws"`` (None with ``"rest"``):
    Binance's stream of ``client``'s market, backfilled through ``client`` (its rate limiter)."""
    if live.feed == "rest":
        yield None
        return
    bars = StreamBars(
        client.market,
        symbols,
        timeframe,
        backfill=client,
        settings=StreamSettings(wait_s=live.stream_wait_s),
    )
    async with bars:
        yield bars
