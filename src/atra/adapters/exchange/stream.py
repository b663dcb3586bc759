"""Binance kline WebSocket streams: closed bars of many symbols over one combined stream.

:class:`KlineStream` connects to ``{base}/stream?streams=btcusdt@kline_1h/ethusdt@kline_1h``
(spot ``wss://stream.binance.com:9443``, USDT-M ``wss://fstream.binance.com``) with aiohttp and
hands every CLOSED kline (``k.x == true``) to ``on_bar`` once: a kline seen before (same symbol
and open time: a duplicate message, or a bar the REST backfill already delivered) is counted
and dropped. The server's ping frames are answered by aiohttp (``autoping``); our own pings
every ``heartbeat_s`` detect a dead connection. A connection that fails or closes is opened
again after an exponential back-off with full jitter (``backoff_s`` doubling up to
``max_backoff_s``; reset once a connection has delivered a message), attempts at least
``min_interval_s`` apart (Binance: 300 connection attempts per 5 minutes per IP). Binance
closes every connection at 24 h: the stream reconnects on its own after ``max_connection_s``
(default 23 h 30 min), a planned reconnect.

After every (re)connect, the bars each symbol missed since its last bar (the stream's own, or
the one :meth:`KlineStream.seen_through` was told about) are fetched over REST through
``backfill`` (the loop's :class:`~atra.adapters.exchange.client.ExchangeClient`, sharing its
rate limiter) and delivered like streamed ones, oldest first.

With ``metrics`` (:class:`~atra.obs.Metrics`) it counts messages, reconnects (``planned`` or
``error``), bars backfilled and duplicates ignored, observes each closed kline's lag (event time
``E`` to receipt on ``now_s``) and counts a failed connection in ``atra_errors_total``.

:func:`parse_kline_event` is strict: a message of the wrong shape is a one-line
:class:`~atra.errors.ExchangeError` naming the stream and what was expected (numbers finite
and >= 0); that prices are > 0 is checked by the live loop as it takes the bars
(:class:`~atra.live.stream_feed.StreamBars`), as it checks its REST candles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from atra.core.types import Market, Timeframe
from atra.errors import AtraError, ExchangeError
from atra.obs import Metrics, get_logger

if TYPE_CHECKING:
    from atra.adapters.exchange.client import ExchangeClient

SPOT_STREAM_URL: Final[str] = "wss://stream.binance.com:9443"
FUTURES_STREAM_URL: Final[str] = "wss://fstream.binance.com"
MAX_STREAMS: Final[int] = 1024
"""Streams one connection may carry (spot's documented limit; USDT-M allows 1024 too)."""
MAX_CONNECTION_S: Final[float] = 23.5 * 3600
"""Reconnect before Binance's 24 h connection limit."""
MIN_CONNECT_INTERVAL_S: Final[float] = 1.0
"""Binance takes at most 300 connection attempts per 5 minutes per IP: one per second."""

_CLOSED: Final = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)

log = get_logger("atra.adapters.exchange.stream")


def default_stream_url(market: Market) -> str:
    return SPOT_STREAM_URL if market is Market.SPOT else FUTURES_STREAM_URL


def stream_name(symbol: str, timeframe: Timeframe) -> str:
    """``btcusdt@kline_1h``: stream names are lower case."""
    return f"{symbol.lower()}@kline_{timeframe.value}"


def combined_url(base: str, symbols: Sequence[str], timeframe: Timeframe) -> str:
    """The combined-stream URL of ``symbols``' kline streams."""
    if not symbols:
        raise ExchangeError("kline stream: no symbols to subscribe")
    if len(symbols) > MAX_STREAMS:
        raise ExchangeError(f"kline stream: {len(symbols)} streams, at most {MAX_STREAMS}")
    names = "/".join(stream_name(s, timeframe) for s in symbols)
    return f"{base.rstrip('/')}/stream?streams={names}"


@dataclass(frozen=True, slots=True)
class ClosedKline:
    """One closed bar from a kline stream (prices and volume as floats)."""

    symbol: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    event_ms: int | None = None
    """The event's time (``E``): when the exchange sent it (None: not given)."""


def _int(k: Mapping[str, Any], key: str, where: str) -> int:
    value = k.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExchangeError(f"{where}: k.{key} must be an integer, got {value!r}")
    return value


def _num(k: Mapping[str, Any], key: str, where: str) -> float:
    value = k.get(key)
    if not isinstance(value, str):
        raise ExchangeError(f"{where}: k.{key} must be a decimal string, got {value!r}")
    try:
        x = float(value)
    except ValueError:
        raise ExchangeError(f"{where}: k.{key} must be a decimal string, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ExchangeError(f"{where}: k.{key} must be finite and >= 0, got {value!r}")
    return x


def parse_kline_event(
    payload: Any, timeframe: Timeframe, *, where: str = "kline stream"
) -> ClosedKline | None:
    """A kline event (raw, or wrapped as a combined stream's ``{"stream", "data"}``): the
    closed bar it carries, or None while the bar is still forming (``k.x`` false)."""
    if isinstance(payload, dict) and "stream" in payload:
        stream = payload["stream"]
        if not isinstance(stream, str):
            raise ExchangeError(f"{where}: 'stream' must be a string, got {stream!r}")
        where = f"{where} {stream}"
        payload = payload.get("data")
    if not isinstance(payload, dict):
        raise ExchangeError(f"{where}: expected a JSON object with 'e' and 'k'")
    if payload.get("e") != "kline":
        raise ExchangeError(f"{where}: expected event 'kline', got {payload.get('e')!r}")
    k = payload.get("k")
    if not isinstance(k, dict):
        raise ExchangeError(f"{where}: 'k' must be an object, got {k!r}")
    symbol = k.get("s")
    if not isinstance(symbol, str) or not symbol or payload.get("s") != symbol:
        raise ExchangeError(f"{where}: k.s must name the event's symbol, got {symbol!r}")
    if k.get("i") != timeframe.value:
        raise ExchangeError(f"{where}: k.i must be {timeframe.value!r}, got {k.get('i')!r}")
    closed = k.get("x")
    if not isinstance(closed, bool):
        raise ExchangeError(f"{where}: k.x must be true or false, got {closed!r}")
    t, close_t = _int(k, "t", where), _int(k, "T", where)
    if t % timeframe.ms or close_t != t + timeframe.ms - 1:
        raise ExchangeError(f"{where}: k.t {t} / k.T {close_t} are not one {timeframe.value} bar")
    o, h, lo, c = (_num(k, key, where) for key in ("o", "h", "l", "c"))
    v = _num(k, "v", where)
    if not closed:
        return None
    event = payload.get("E")
    if event is not None and (not isinstance(event, int) or isinstance(event, bool)):
        raise ExchangeError(f"{where}: E must be an integer (event time ms), got {event!r}")
    return ClosedKline(symbol, t, close_t, o, h, lo, c, v, event)


@dataclass(slots=True)
class StreamStats:
    """What a :class:`KlineStream` has done so far."""

    connects: int = 0
    planned_reconnects: int = 0
    failures: int = 0
    messages: int = 0
    bars: int = 0
    duplicates: int = 0
    backfilled: int = 0
    errors: list[str] = field(default_factory=list)


class KlineStream:
    """Closed klines of ``symbols`` on one combined stream, deduplicated, backfilled after
    every (re)connect. ``await stream.run()`` until cancelled or :meth:`close`."""

    def __init__(
        self,
        market: Market,
        symbols: Sequence[str],
        timeframe: Timeframe,
        on_bar: Callable[[ClosedKline], None],
        *,
        base_url: str | None = None,
        backfill: ExchangeClient | None = None,
        now_s: Callable[[], float] = time.time,
        heartbeat_s: float = 30.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_connection_s: float = MAX_CONNECTION_S,
        min_interval_s: float = MIN_CONNECT_INTERVAL_S,
        seed: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.market = market
        self.metrics = metrics
        """Where the stream's counters and its lag go (``atra_stream_*``); None: nowhere."""
        self.symbols = tuple(symbols)
        self.timeframe = timeframe
        self.url = combined_url(base_url or default_stream_url(market), self.symbols, timeframe)
        self.on_bar = on_bar
        self.backfill = backfill
        self.now_s = now_s
        self.heartbeat_s = heartbeat_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_connection_s = max_connection_s
        self.min_interval_s = min_interval_s
        self.stats = StreamStats()
        self.connected = asyncio.Event()
        self._rng = random.Random(seed)
        self._last: dict[str, int] = {}
        self._seen: dict[str, set[int]] = {s: set() for s in self.symbols}
        self._closing = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    # ---- bars --------------------------------------------------------------------------

    def seen_through(self, symbol: str, open_ms: int) -> None:
        """``symbol``'s bars up to ``open_ms`` are held elsewhere (a REST fetch): a backfill
        starts after it, and a streamed copy of one of them is a duplicate."""
        if open_ms > self._last.get(symbol, -1):
            self._last[symbol] = open_ms

    def _deliver(self, bar: ClosedKline) -> None:
        seen = self._seen.get(bar.symbol)
        if seen is None:
            raise ExchangeError(f"{self.url}: kline of {bar.symbol}, which is not subscribed")
        last = self._last.get(bar.symbol)
        if bar.open_time in seen or (last is not None and bar.open_time <= last):
            self.stats.duplicates += 1
            if self.metrics is not None:
                self.metrics.stream_duplicate_bars_total.labels(market=self.market.value).inc()
            return
        seen.add(bar.open_time)
        if len(seen) > 256:  # keep the recent keys only: older ones are <= last anyway
            keep = sorted(seen)[-128:]
            seen.clear()
            seen.update(keep)
        self.stats.bars += 1
        self.on_bar(bar)
        # ``last`` only moves forward through contiguous bars: a gap (a dropped message) is
        # filled by the next backfill, not skipped over
        step = self.timeframe.ms
        cur = self._last.get(bar.symbol)
        if cur is None or bar.open_time == cur + step:
            nxt = bar.open_time
            while nxt + step in seen:
                nxt += step
            self._last[bar.symbol] = nxt

    async def _backfill(self) -> None:
        """Every bar missed since each symbol's last one, over REST (closed bars only)."""
        if self.backfill is None:
            return
        step = self.timeframe.ms
        last_closed = (int(self.now_s() * 1000) // step - 1) * step
        for sym in self.symbols:
            last = self._last.get(sym)
            if last is None or last >= last_closed:
                continue
            start = last + step
            n = min((last_closed - start) // step + 1, self.backfill.max_klines)
            rows = await self.backfill.fetch_kline_rows(
                sym, self.timeframe, start_ms=start, end_ms=last_closed, limit=n
            )
            t = rows.open_time
            o, h, lo, c, v = rows.values.T
            for i in range(t.size):
                ot = int(t[i])
                bar = ClosedKline(
                    sym,
                    ot,
                    ot + step - 1,
                    float(o[i]),
                    float(h[i]),
                    float(lo[i]),
                    float(c[i]),
                    float(v[i]),
                )
                before = self.stats.bars
                self._deliver(bar)
                self.stats.backfilled += self.stats.bars - before
                if self.metrics is not None and self.stats.bars > before:
                    self.metrics.stream_backfilled_bars_total.labels(market=self.market.value).inc()
            if t.size:
                self.seen_through(sym, int(t[-1]))

    # ---- connection --------------------------------------------------------------------

    async def close(self) -> None:
        """Stop: the open connection is closed, :meth:`run` returns."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def run(self) -> None:
        """Connect, read, reconnect (backoff + jitter, planned before 24 h) until closed."""
        delay = self.backoff_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
        last_attempt = -math.inf
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._closing.is_set():
                spacing = last_attempt + self.min_interval_s - time.monotonic()
                if spacing > 0:  # never more attempts than Binance's connection limit
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), spacing)
                    if self._closing.is_set():
                        break
                last_attempt = time.monotonic()
                delivered = False
                planned = self.stats.planned_reconnects
                try:
                    delivered = await self._connection(session)
                except (aiohttp.ClientError, OSError, TimeoutError, AtraError) as exc:
                    self.stats.failures += 1
                    if self.metrics is not None:
                        self.metrics.errors_total.labels(type=type(exc).__name__).inc()
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                    log.warning("stream_failed", url=self.url, error=f"{type(exc).__name__}: {exc}")
                finally:
                    self.connected.clear()
                    self._ws = None
                if self._closing.is_set():
                    break
                if self.metrics is not None:
                    reason = "planned" if self.stats.planned_reconnects > planned else "error"
                    self.metrics.stream_reconnects_total.labels(
                        market=self.market.value, reason=reason
                    ).inc()
                if delivered:
                    delay = self.backoff_s
                wait = self._rng.uniform(0.0, delay)  # full jitter
                delay = min(self.max_backoff_s, delay * 2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)

    async def _connection(self, session: aiohttp.ClientSession) -> bool:
        """One connection: backfill, then read until it closes or its planned end; True
        when it delivered at least one message."""
        delivered = False
        async with session.ws_connect(
            self.url, heartbeat=self.heartbeat_s, autoping=True, max_msg_size=1 << 20
        ) as ws:
            self._ws = ws
            self.stats.connects += 1
            log.info("stream_connected", url=self.url, connects=self.stats.connects)
            await self._backfill()
            self.connected.set()
            deadline = time.monotonic() + self.max_connection_s
            while not self._closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats.planned_reconnects += 1
                    log.info("stream_planned_reconnect", url=self.url)
                    return True
                try:
                    msg = await ws.receive(timeout=left)
                except TimeoutError:
                    continue
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.stats.messages += 1
                    if self.metrics is not None:
                        self.metrics.stream_messages_total.labels(market=self.market.value).inc()
                    delivered = True
                    try:
                        payload = json.loads(msg.data)
                    except ValueError:
                        raise ExchangeError(f"{self.url}: a message that is not JSON") from None
                    bar = parse_kline_event(payload, self.timeframe, where=self.url)
                    if bar is not None:
                        if self.metrics is not None and bar.event_ms is not None:
                            lag = self.now_s() - bar.event_ms / 1000
                            self.metrics.stream_lag_seconds.labels(
                                market=self.market.value
                            ).observe(lag)
                        self._deliver(bar)
                elif msg.type in _CLOSED:
                    break
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    raise ExchangeError(f"{self.url}: connection error {ws.exception()!r}")
        if not self._closing.is_set():
            log.warning("stream_closed", url=self.url, close_code=ws.close_code)
        return delivered
