"""Closed bars for the live loop from Binance's kline WebSocket streams (``live.feed = "ws"``).

:class:`StreamBars` runs a :class:`~atra.adapters.exchange.stream.KlineStream` (one combined
stream of every symbol, plus the model's BTC context symbol when it reads one) in the
background, and a second one on the counterpart market (the spot stream base for a perpetual
run) when the model reads basis features; it keeps the closed bars they deliver until the
loop's candle feed takes them (:meth:`StreamBars.take`). A cycle takes, for each symbol (and
its side data), the bars after its in-memory window up to the bar just closed, as soon as all
of them have arrived; a bar still missing after ``wait_s`` (a dropped message, a connection
down) is fetched over REST by the feed (:meth:`~atra.live.feed.CandleFeed` does it through
the shared limiter), and the stream is told so its next backfill and its duplicate check
start after it (:meth:`StreamBars.note`). The window's first fill always comes over REST.

Funding rates stay on REST, fetched by the feed when a new settled rate can exist
(:mod:`atra.live.funding_due`): the ``<symbol>@markPrice`` stream carries
the current, still moving estimate ``r`` of the next rate, while the backtest (and the
features) read the settled rate of ``GET /fapi/v1/fundingRate``; a streamed estimate would
change decisions.

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

from atra.adapters.exchange.client import ExchangeClient
from atra.adapters.exchange.stream import (
    MAX_CONNECTION_S,
    MIN_CONNECT_INTERVAL_S,
    ClosedKline,
    KlineStream,
)
from atra.config_live import LiveConfig
from atra.core.features.context import ModelInputs
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.live.settings import Bars
from atra.obs import Metrics, get_logger

FeedKind = Literal["ws", "rest"]
BTC_SYMBOL = "BTCUSDT"
"""The BTC context symbol of the models' ``btc`` features."""

log = get_logger("atra.live.stream_feed")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the WebSocket feed runs. ``wait_s``: how long a cycle waits for a symbol's bars
    on the stream before fetching them over REST (must leave the REST fetch time inside the
    cycle deadline)."""

    url: str | None = None
    """Stream base URL (None: Binance's for the market)."""
    side_url: str | None = None
    """Stream base URL of the counterpart market (None: Binance's for that market)."""
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
    """The closed bars of ``symbols`` from kline streams, held until a cycle takes them.

    ``btc``: one more symbol on the same connection (the model's BTC context). ``side``: the
    counterpart market's client; its stream carries ``symbols`` there, backfilled through it.
    """

    def __init__(
        self,
        market: Market,
        symbols: Sequence[str],
        timeframe: Timeframe,
        *,
        backfill: ExchangeClient,
        settings: StreamSettings | None = None,
        now_s: Callable[[], float] = time.time,
        btc: str | None = None,
        side: ExchangeClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or StreamSettings()
        self.market = market
        self.timeframe = timeframe
        self.step_ms = timeframe.ms
        own = tuple(symbols) + ((btc,) if btc is not None and btc not in symbols else ())
        self._bars: dict[tuple[Market, str], dict[int, ClosedKline]] = {}
        self._arrived: dict[tuple[Market, str], asyncio.Event] = {}
        self.stream = self._kline_stream(market, own, backfill, self.settings.url, now_s)
        self.side_stream: KlineStream | None = None
        """The counterpart market's stream (None: the model reads no basis features)."""
        if side is not None:
            self.side_stream = self._kline_stream(
                side.market, tuple(symbols), side, self.settings.side_url, now_s
            )
        self.taken = 0
        self.rest_fallbacks = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics: Metrics | None = None
        if metrics is not None:
            self.attach_metrics(metrics)

    def _kline_stream(
        self,
        market: Market,
        symbols: tuple[str, ...],
        backfill: ExchangeClient,
        url: str | None,
        now_s: Callable[[], float],
    ) -> KlineStream:
        for sym in symbols:
            self._bars[(market, sym)] = {}
            self._arrived[(market, sym)] = asyncio.Event()

        def on_bar(bar: ClosedKline) -> None:
            key = (market, bar.symbol)
            self._bars[key][bar.open_time] = bar
            self._arrived[key].set()

        s = self.settings
        return KlineStream(
            market,
            symbols,
            self.timeframe,
            on_bar,
            base_url=url,
            backfill=backfill,
            heartbeat_s=s.heartbeat_s,
            backoff_s=s.backoff_s,
            max_backoff_s=s.max_backoff_s,
            max_connection_s=s.max_connection_s,
            min_interval_s=s.min_interval_s,
            seed=s.seed,
            now_s=now_s,
        )

    @property
    def streams(self) -> list[KlineStream]:
        return [self.stream, *([] if self.side_stream is None else [self.side_stream])]

    def attach_metrics(self, metrics: Metrics) -> None:
        """Count messages, reconnects, backfills, duplicates and lag in ``metrics``."""
        self.metrics = metrics
        for stream in self.streams:
            stream.metrics = metrics

    def carries(self, symbol: str, market: Market | None = None) -> bool:
        """Whether a stream delivers ``symbol``'s bars on ``market`` (default: the run's)."""
        return (market or self.market, symbol) in self._bars

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(stream.run(), name=f"kline-stream-{stream.market.value}")
            for stream in self.streams
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for stream in self.streams:
            await stream.close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once every stream is connected (within ``timeout_s``)."""
        try:
            async with asyncio.timeout(timeout_s):
                for stream in self.streams:
                    await stream.connected.wait()
        except TimeoutError:
            return False
        return True

    def _stream_of(self, market: Market) -> KlineStream:
        return self.stream if market is self.market else self.side_stream or self.stream

    def note(self, symbol: str, last_ms: int, market: Market | None = None, bars: int = 0) -> None:
        """``symbol``'s ``bars`` bars up to ``last_ms`` came over REST: forget held copies,
        and let the stream's backfill and duplicate check start after them."""
        mkt = market or self.market
        held = self._bars[(mkt, symbol)]
        for t in [t for t in held if t <= last_ms]:
            del held[t]
        self._stream_of(mkt).seen_through(symbol, last_ms)
        if self.metrics is not None and bars:
            self.metrics.stream_backfilled_bars_total.labels(market=mkt.value).inc(bars)

    async def take(
        self, symbol: str, start_ms: int, end_ms: int, market: Market | None = None
    ) -> Bars | None:
        """``symbol``'s bars (on ``market``, default the run's) with open times
        ``start_ms..end_ms`` as arrays (no pandas frame) once all have arrived, or None when one is
        still missing after ``wait_s`` (the caller fetches them over REST and calls
        :meth:`note`). Bars stay held until a later take starts after them: the BTC context
        and a traded BTCUSDT read the same bars."""
        for task in self._tasks:
            if task.done():
                task.result()  # a stream task died: raise its error
        mkt = market or self.market
        step = self.step_ms
        want = range(start_ms, end_ms + 1, step)
        held = self._bars[(mkt, symbol)]
        arrived = self._arrived[(mkt, symbol)]
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
                    market=mkt.value,
                    missing=len(missing),
                    first_missing=missing[0],
                    wait_s=self.settings.wait_s,
                )
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await arrived.wait()
        bars = [held[t] for t in want]
        for bar in bars:
            _check_prices(bar)
        for t in [t for t in held if t < start_ms]:  # older than the window's end: not needed
            del held[t]
        self.taken += len(bars)
        self._stream_of(mkt).seen_through(symbol, end_ms)
        cols = np.array([[b.open, b.high, b.low, b.close, b.volume] for b in bars], np.float64)
        return Bars(np.array([b.open_time for b in bars], np.int64), cols.T)


def _check_prices(bar: ClosedKline) -> None:
    """The candle contract for one streamed bar (the stream parser already requires finite
    numbers >= 0, and :meth:`StreamBars.take` orders the bars by open time): prices > 0."""
    for col in ("open", "high", "low", "close"):
        value = getattr(bar, col)
        if not value > 0.0:
            raise DataError(
                f"candles {bar.symbol}: {col} of the bar at {bar.open_time} = {value}, "
                "expected a price > 0"
            )


@contextlib.asynccontextmanager
async def live_stream(
    live: LiveConfig,
    client: ExchangeClient,
    symbols: Sequence[str],
    timeframe: Timeframe,
    *,
    inputs: ModelInputs | None = None,
    side_client: ExchangeClient | None = None,
) -> AsyncIterator[StreamBars | None]:
    """The kline streams of a live run with ``live.feed = "ws"`` (None with ``"rest"``):
    Binance's streams of ``client``'s market (``live.perp_stream_url`` /
    ``live.spot_stream_url``), backfilled through ``client`` (its rate limiter); with the
    BTC context and the counterpart market's stream when the model's ``inputs`` read them."""
    if live.feed == "rest":
        yield None
        return
    urls = {Market.PERP: live.perp_stream_url, Market.SPOT: live.spot_stream_url}
    need = inputs or ModelInputs()
    side = side_client if need.needs_counterpart else None
    bars = StreamBars(
        client.market,
        symbols,
        timeframe,
        backfill=client,
        settings=StreamSettings(
            url=urls[client.market],
            side_url=None if side is None else urls[side.market],
            wait_s=live.stream_wait_s,
        ),
        btc=BTC_SYMBOL if need.needs_btc else None,
        side=side,
    )
    async with bars:
        yield bars
