"""Market-data clients: the :class:`ExchangeClient` protocol ATRA codes against, and
:class:`BinanceClient`, Binance spot and USDT-M futures over aiohttp (wire JSON -> frames).

:class:`ExchangeClient` is the small protocol the rest of ATRA codes against (a ccxt-backed
client for other exchanges can implement it later). :class:`BinanceClient` is one market of
Binance: ``async with BinanceClient(Market.SPOT) as client: ...`` opens one
``aiohttp.ClientSession`` and closes it on the way out, also on error or cancellation. Its requests
(rate limiting, timeouts, retries, errors, metrics with ``metrics=``) go through
:class:`~atra.adapters.exchange.transport.BinanceTransport`; the answers are parsed by
:mod:`atra.adapters.exchange.wire`, which also holds the request weights.

:func:`plan_pages` cuts a time range into pages that can be fetched concurrently;
:func:`first_error` picks the error to raise for a task group of fetches that failed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import pandas as pd

from atra.adapters.exchange.transport import BinanceTransport
from atra.adapters.exchange.wire import (
    ExchangeInfo,
    Klines,
    PremiumIndex,
    exchange_info_weight,
    klines_weight,
    parse_exchange_info,
    parse_funding,
    parse_funding_info,
    parse_kline_rows,
    parse_premium_index,
    shape_error,
)
from atra.adapters.ratelimit import FUNDING, WEIGHT, Clock, RateLimiter
from atra.core.types import Market, Timeframe
from atra.errors import ExchangeError, IPBanned

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

    from atra.obs.metrics import Metrics

SPOT_BASE_URL: Final[str] = "https://api.binance.com"
FUTURES_BASE_URL: Final[str] = "https://fapi.binance.com"
MAX_KLINES: Final[dict[Market, int]] = {Market.SPOT: 1000, Market.PERP: 1500}
MAX_FUNDING: Final[int] = 1000
_PATHS: Final[dict[Market, dict[str, str]]] = {
    Market.SPOT: {"klines": "/api/v3/klines", "exchangeInfo": "/api/v3/exchangeInfo"},
    Market.PERP: {
        "klines": "/fapi/v1/klines",
        "exchangeInfo": "/fapi/v1/exchangeInfo",
        "fundingRate": "/fapi/v1/fundingRate",
        "fundingInfo": "/fapi/v1/fundingInfo",
        "premiumIndex": "/fapi/v1/premiumIndex",
    },
}


class ExchangeClient(Protocol):
    """What ATRA needs from an exchange market: candles as arrays (``Klines``: the live feed
    and the stream backfill never build a frame per request), funding as frames following the
    shared frame contract."""

    market: Market
    exchange: str
    max_klines: int

    async def fetch_kline_rows(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        closed_only: bool = True,
    ) -> Klines: ...

    async def fetch_funding(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame: ...

    async def fetch_premium_index(self, symbol: str) -> PremiumIndex: ...

    async def exchange_info(self) -> ExchangeInfo: ...


def plan_pages(start_ms: int, end_ms: int, step_ms: int, limit: int) -> list[tuple[int, int]]:
    """Split ``[start_ms, end_ms)`` into time slices of at most ``limit`` bars each.

    Each slice is ``(startTime, endTime)`` with an inclusive ``endTime``, as Binance takes it.
    Slices are independent, so the pages of one symbol can be fetched concurrently.
    """
    span = step_ms * limit
    return [(s, min(s + span, end_ms) - 1) for s in range(start_ms, end_ms, span)]


class BinanceClient(BinanceTransport):
    """One Binance market (spot or USDT-M futures) over one ``aiohttp.ClientSession``."""

    exchange = "binance"

    def __init__(
        self,
        market: Market,
        *,
        base_url: str | None = None,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float | None = None,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_connections: int = 10,
        page_limit: int = 1000,
        metrics: Metrics | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(
            market,
            base_url or _default_base_url(market),
            limiter=limiter,
            clock=clock,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            max_connections=max_connections,
            metrics=metrics,
            resolver=resolver,
        )
        self.max_klines = min(page_limit, MAX_KLINES[market])

    # ---- endpoints ---------------------------------------------------------------------

    def _path(self, name: str) -> str:
        path = _PATHS[self.market].get(name)
        if path is None:
            raise ExchangeError(f"binance {self.market}: {name} is a USDT-M futures endpoint")
        return path

    async def exchange_info(self) -> ExchangeInfo:
        path = self._path("exchangeInfo")
        payload = await self._get(path, {}, {WEIGHT: exchange_info_weight(self.market)})
        return parse_exchange_info(payload, where=self._where(path, {}))

    async def sync_limits(self) -> ExchangeInfo:
        """Fetch exchangeInfo and take its ``rateLimits`` (REQUEST_WEIGHT and ORDERS)."""
        info = await self.exchange_info()
        self.limiter.configure(info.rate_limits)
        return info

    async def fetch_klines(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        closed_only: bool = True,
    ) -> pd.DataFrame:
        """One page of candles (``open_time`` in ``[start_ms, end_ms]``, at most ``limit``).

        With ``closed_only`` the bar still forming (close time not yet passed) is dropped.
        """
        rows = await self.fetch_kline_rows(
            symbol,
            timeframe,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            closed_only=closed_only,
        )
        return rows.frame()

    async def fetch_kline_rows(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        closed_only: bool = True,
    ) -> Klines:
        """:meth:`fetch_klines` as arrays (:class:`~atra.adapters.exchange.wire.Klines`), no
        pandas frame: what the live feed fetches at each bar close."""
        n = self.max_klines if limit is None else limit
        if not 1 <= n <= MAX_KLINES[self.market]:
            raise ExchangeError(f"klines limit {n} outside 1..{MAX_KLINES[self.market]}")
        params: dict[str, str | int] = {"symbol": symbol, "interval": timeframe.value, "limit": n}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        path = self._path("klines")
        payload = await self._get(path, params, {WEIGHT: klines_weight(self.market, n)})
        where = self._where(path, params)
        rows = parse_kline_rows(payload, where=where)
        if len(rows) > n:
            raise shape_error(where, f"{len(rows)} klines for limit {n}")
        t = rows.open_time
        if t.size and (
            (start_ms is not None and t[0] < start_ms) or (end_ms is not None and t[-1] > end_ms)
        ):
            raise shape_error(where, "klines outside the requested time range")
        if closed_only:
            rows = rows.closed_before(int(self.clock.time() * 1000))
        return rows

    async def fetch_klines_range(
        self,
        symbol: str,
        timeframe: Timeframe,
        start_ms: int,
        end_ms: int,
        *,
        max_parallel: int | None = None,
    ) -> pd.DataFrame:
        """Every closed candle with ``start_ms <= open_time < end_ms``, pages fetched at once.

        ``max_parallel=1`` issues the same pages one after the other.
        """
        pages = plan_pages(start_ms, end_ms, timeframe.ms, self.max_klines)
        if not pages:
            return _empty_candles()
        if max_parallel == 1:
            frames = [await self._page(symbol, timeframe, s, e) for s, e in pages]
        else:
            sem = asyncio.Semaphore(max_parallel or len(pages))

            async def one(s: int, e: int) -> pd.DataFrame:
                async with sem:
                    return await self._page(symbol, timeframe, s, e)

            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(one(s, e)) for s, e in pages]
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            frames = [t.result() for t in tasks]
        return pd.concat(frames, ignore_index=True)

    async def _page(self, symbol: str, timeframe: Timeframe, s: int, e: int) -> pd.DataFrame:
        return await self.fetch_klines(symbol, timeframe, start_ms=s, end_ms=e)

    async def fetch_funding(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """One page of funding events (``funding_time`` in ``[start_ms, end_ms]``)."""
        n = MAX_FUNDING if limit is None else limit
        if not 1 <= n <= MAX_FUNDING:
            raise ExchangeError(f"fundingRate limit {n} outside 1..{MAX_FUNDING}")
        params: dict[str, str | int] = {"symbol": symbol, "limit": n}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        path = self._path("fundingRate")
        payload = await self._get(path, params, {WEIGHT: 1, FUNDING: 1})
        frame = parse_funding(payload, where=self._where(path, params))
        if len(frame) > n:
            raise shape_error(self._where(path, params), f"{len(frame)} rows for limit {n}")
        return frame

    async def fetch_funding_info(self) -> dict[str, int]:
        """Funding interval hours of the symbols whose interval (or rate cap) Binance adjusted
        (``GET /fapi/v1/fundingInfo``, weight 0, one unit of the fundingRate bucket); a
        symbol not listed settles every
        :data:`~atra.adapters.exchange.wire.DEFAULT_FUNDING_HOURS` hours."""
        path = self._path("fundingInfo")
        payload = await self._get(path, {}, {FUNDING: 1})
        return parse_funding_info(payload, where=self._where(path, {}))

    async def fetch_funding_range(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Every funding event with ``start_ms <= funding_time < end_ms`` (cursor pages)."""
        frames: list[pd.DataFrame] = []
        cursor = start_ms
        while cursor < end_ms:
            page = await self.fetch_funding(symbol, start_ms=cursor, end_ms=end_ms - 1)
            if page.empty:
                break
            frames.append(page)
            if len(page) < MAX_FUNDING:
                break
            cursor = int(page["funding_time"].iloc[-1]) + 1
        if not frames:
            return pd.DataFrame(
                {
                    "funding_time": np.array([], dtype=np.int64),
                    "funding_rate": np.array([], dtype=np.float64),
                }
            )
        return pd.concat(frames, ignore_index=True)

    async def fetch_premium_index(self, symbol: str) -> PremiumIndex:
        path = self._path("premiumIndex")
        params: dict[str, str | int] = {"symbol": symbol}
        payload = await self._get(path, params, {WEIGHT: 1})
        return parse_premium_index(payload, where=self._where(path, params))


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for a task group that failed: an IP ban first, else the first one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, IPBanned)), leaves[0])


def _default_base_url(market: Market) -> str:
    return SPOT_BASE_URL if market is Market.SPOT else FUTURES_BASE_URL


def _empty_candles() -> pd.DataFrame:
    frame = pd.DataFrame({"open_time": np.array([], dtype=np.int64)})
    for col in ("open", "high", "low", "close", "volume"):
        frame[col] = np.array([], dtype=np.float64)
    return frame
