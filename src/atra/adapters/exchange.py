"""Exchange clients: Binance spot and USDT-M futures over httpx, wire JSON -> frames here.

:class:`ExchangeClient` is the small protocol the rest of ATRA codes against (a ccxt-backed
client for other exchanges can implement it later). :class:`BinanceClient` is one market of
Binance: ``async with BinanceClient(Market.SPOT) as client: ...`` opens one
``httpx.AsyncClient`` and closes it on the way out, also on error or cancellation.

Every request goes through the process-wide :class:`~atra.adapters.ratelimit.RateLimiter` of
its host (or the one passed in), has a timeout, and is retried with exponential backoff and
jitter (tenacity) when the failure is transient: timeouts, dropped connections, 5xx, 429, and
a body that is not JSON at all (a proxy page, a truncated transfer). Anything else (a Binance
error such as ``-1121 Invalid symbol.``, JSON of the wrong shape) fails at once with a
one-line :class:`~atra.errors.ExchangeError`.

Request weights (Binance docs, 2024): spot klines 2; futures klines 1 / 2 / 5 / 10 for
``limit`` < 100 / < 500 / <= 1000 / > 1000; spot exchangeInfo 20, futures exchangeInfo 1;
premiumIndex 1 (with a symbol); fundingRate is charged 1 weight and 1 unit of its own bucket
(500 requests per 5 minutes per IP).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.ratelimit import (
    FUNDING,
    WEIGHT,
    Clock,
    RateLimit,
    RateLimiter,
    parse_rate_limits,
    shared_limiter,
)
from atra.core.types import Market, Timeframe
from atra.errors import ExchangeError, IPBanned, RateLimited, TransientExchangeError

SPOT_BASE_URL: Final[str] = "https://api.binance.com"
FUTURES_BASE_URL: Final[str] = "https://fapi.binance.com"
MAX_KLINES: Final[dict[Market, int]] = {Market.SPOT: 1000, Market.PERP: 1500}
MAX_FUNDING: Final[int] = 1000
DEFAULT_BAN_S: Final[float] = 120.0
_PATHS: Final[dict[Market, dict[str, str]]] = {
    Market.SPOT: {"klines": "/api/v3/klines", "exchangeInfo": "/api/v3/exchangeInfo"},
    Market.PERP: {
        "klines": "/fapi/v1/klines",
        "exchangeInfo": "/fapi/v1/exchangeInfo",
        "fundingRate": "/fapi/v1/fundingRate",
        "premiumIndex": "/fapi/v1/premiumIndex",
    },
}
_BANNED_UNTIL_RE: Final = re.compile(r"banned until (\d{12,})")


def klines_weight(market: Market, limit: int) -> int:
    """Request weight of one klines call returning up to ``limit`` bars."""
    if market is Market.SPOT:
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


def exchange_info_weight(market: Market) -> int:
    """Request weight of exchangeInfo (spot 20, futures 1)."""
    return 20 if market is Market.SPOT else 1


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One symbol of exchangeInfo."""

    symbol: str
    status: str


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """exchangeInfo, reduced to what ATRA uses."""

    server_time_ms: int | None
    rate_limits: tuple[RateLimit, ...]
    symbols: tuple[SymbolInfo, ...]

    def has_symbol(self, symbol: str) -> bool:
        return any(s.symbol == symbol for s in self.symbols)


@dataclass(frozen=True, slots=True)
class PremiumIndex:
    """USDT-M ``premiumIndex``: mark/index price and the funding rate now running."""

    symbol: str
    mark_price: float
    index_price: float
    last_funding_rate: float
    next_funding_time_ms: int
    time_ms: int


class ExchangeClient(Protocol):
    """What ATRA needs from an exchange market. Frames follow the shared frame contract."""

    market: Market
    exchange: str
    max_klines: int

    async def fetch_klines(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        closed_only: bool = True,
    ) -> pd.DataFrame: ...

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


def _one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _shape_error(where: str, what: str) -> ExchangeError:
    return ExchangeError(f"{where}: unexpected response shape: {what}")


def parse_klines(payload: object, *, where: str) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    """Binance klines rows -> (candle frame, close times). A wrong shape is ExchangeError."""
    if not isinstance(payload, list):
        raise _shape_error(where, f"expected a list of klines, got {type(payload).__name__}")
    # fast path: C-level comprehensions; the row-by-row check runs only to name a bad row
    shapes_ok = set(map(type, payload)) <= {list} and min(map(len, payload), default=7) >= 7
    open_ms = [r[0] for r in payload] if shapes_ok else []
    close_ms = [r[6] for r in payload] if shapes_ok else []
    if not shapes_ok or not set(map(type, open_ms)) | set(map(type, close_ms)) <= {int}:
        _find_bad_kline(payload, where)
    try:
        times = np.array([open_ms, close_ms], dtype=np.int64).reshape(2, -1)
        values = np.array([r[1:6] for r in payload], dtype=np.float64).reshape(-1, 5)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _shape_error(where, f"kline fields are not numbers ({_one_line(str(exc))})") from exc
    if not bool(np.isfinite(values).all()):
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise _shape_error(where, f"kline {row} fields are not numbers: {payload[row]!r:.60}")
    open_time = times[0]
    if open_time.size > 1 and not bool((np.diff(open_time) > 0).all()):
        raise _shape_error(where, "kline open times are not strictly increasing")
    frame = pd.DataFrame(
        {
            "open_time": open_time,
            "open": values[:, 0],
            "high": values[:, 1],
            "low": values[:, 2],
            "close": values[:, 3],
            "volume": values[:, 4],
        }
    )
    return frame, times[1]


def _find_bad_kline(payload: list[Any], where: str) -> None:
    for i, row in enumerate(payload):
        if not isinstance(row, list) or len(row) < 7:
            raise _shape_error(where, f"kline {i} is not a list of >= 7 fields: {row!r:.60}")
        if not all(type(row[j]) is int for j in (0, 6)):
            raise _shape_error(where, f"kline {i} has non-integer times: {row!r:.60}")
    raise AssertionError("unreachable")  # pragma: no cover


def parse_funding(payload: object, *, where: str) -> pd.DataFrame:
    """Binance fundingRate rows -> funding frame. A wrong shape is ExchangeError."""
    if not isinstance(payload, list):
        raise _shape_error(where, f"expected a list of funding rows, got {type(payload).__name__}")
    times: list[int] = []
    rates: list[float] = []
    for i, row in enumerate(payload):
        try:
            t = row["fundingTime"]
            if not isinstance(t, int) or isinstance(t, bool):
                raise TypeError("fundingTime")
            times.append(t)
            rates.append(float(row["fundingRate"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise _shape_error(where, f"funding row {i} unusable: {row!r:.60}") from exc
    t_arr = np.array(times, dtype=np.int64)
    if t_arr.size > 1 and not bool((np.diff(t_arr) > 0).all()):
        raise _shape_error(where, "funding times are not strictly increasing")
    return pd.DataFrame({"funding_time": t_arr, "funding_rate": np.array(rates, dtype=np.float64)})


def parse_premium_index(payload: object, *, where: str) -> PremiumIndex:
    """Binance premiumIndex object -> :class:`PremiumIndex`."""
    try:
        if not isinstance(payload, dict):
            raise TypeError(type(payload).__name__)
        return PremiumIndex(
            symbol=str(payload["symbol"]),
            mark_price=float(payload["markPrice"]),
            index_price=float(payload["indexPrice"]),
            last_funding_rate=float(payload["lastFundingRate"]),
            next_funding_time_ms=int(payload["nextFundingTime"]),
            time_ms=int(payload["time"]),
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise _shape_error(where, f"premiumIndex unusable: {payload!r:.60}") from exc


def parse_exchange_info(payload: object, *, where: str) -> ExchangeInfo:
    """Binance exchangeInfo -> :class:`ExchangeInfo`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("symbols"), list):
        raise _shape_error(where, f"exchangeInfo without a symbols list: {payload!r:.60}")
    try:
        symbols = tuple(
            SymbolInfo(str(s["symbol"]), str(s.get("status", "TRADING")))
            for s in payload["symbols"]
        )
    except (TypeError, KeyError, AttributeError) as exc:
        raise _shape_error(where, "exchangeInfo symbols entries lack 'symbol'") from exc
    limits = parse_rate_limits(payload.get("rateLimits", []))
    server_time = payload.get("serverTime")
    return ExchangeInfo(server_time if isinstance(server_time, int) else None, limits, symbols)


def plan_pages(start_ms: int, end_ms: int, step_ms: int, limit: int) -> list[tuple[int, int]]:
    """Split ``[start_ms, end_ms)`` into time slices of at most ``limit`` bars each.

    Each slice is ``(startTime, endTime)`` with an inclusive ``endTime``, as Binance takes it.
    Slices are independent, so the pages of one symbol can be fetched concurrently.
    """
    span = step_ms * limit
    return [(s, min(s + span, end_ms) - 1) for s in range(start_ms, end_ms, span)]


class BinanceClient:
    """One Binance market (spot or USDT-M futures) over one ``httpx.AsyncClient``."""

    exchange = "binance"

    def __init__(
        self,
        market: Market,
        *,
        base_url: str | None = None,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_connections: int = 10,
        page_limit: int = 1000,
    ) -> None:
        self.market = market
        self.base_url = (base_url or _default_base_url(market)).rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        if not self.host:
            raise ExchangeError(f"base URL {self.base_url!r} has no host")
        self.limiter = limiter or shared_limiter(
            self.host, market, clock=clock, max_connections=max_connections
        )
        self.clock: Clock = clock or self.limiter.clock
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_klines = min(page_limit, MAX_KLINES[market])
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        n = self.limiter.max_connections
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            headers={"Accept": "application/json", "User-Agent": "atra"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent; shielded so cancellation cannot skip it)."""
        http, self._http = self._http, None
        if http is not None:
            await asyncio.shield(http.aclose())

    @property
    def is_open(self) -> bool:
        return self._http is not None

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
        """Fetch exchangeInfo and take the REQUEST_WEIGHT limit from its ``rateLimits``."""
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
        frame, close_time = parse_klines(payload, where=where)
        if len(frame) > n:
            raise _shape_error(where, f"{len(frame)} klines for limit {n}")
        t = frame["open_time"].to_numpy()
        if t.size and (
            (start_ms is not None and t[0] < start_ms) or (end_ms is not None and t[-1] > end_ms)
        ):
            raise _shape_error(where, "klines outside the requested time range")
        if closed_only:
            now_ms = int(self.clock.time() * 1000)
            frame = frame[close_time < now_ms].reset_index(drop=True)
        return frame

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
            raise _shape_error(self._where(path, params), f"{len(frame)} rows for limit {n}")
        return frame

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

    # ---- the request path --------------------------------------------------------------

    def _where(self, path: str, params: Mapping[str, str | int]) -> str:
        query = " ".join(f"{k}={v}" for k, v in params.items())
        return f"binance {self.market} {path}" + (f" {query}" if query else "")

    async def _get(
        self, path: str, params: Mapping[str, str | int], charges: Mapping[str, int]
    ) -> object:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
            + wait_random(0, self.backoff_s),
            retry=retry_if_exception_type(TransientExchangeError),
            sleep=self.clock.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params, charges)
        except TransientExchangeError as exc:
            raise TransientExchangeError(
                f"{exc} (gave up after {self.max_attempts} attempts)"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(
        self, path: str, params: Mapping[str, str | int], charges: Mapping[str, int]
    ) -> object:
        where = self._where(path, params)
        resp = await self.send("GET", path, charges, where=where, params=params)
        return self._handle(resp, where)

    async def send(
        self,
        method: str,
        path: str,
        charges: Mapping[str, int],
        *,
        where: str,
        params: Mapping[str, str | int] | None = None,
        query: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request through the limiter: ``params`` are encoded by httpx, a ``query`` string
        is sent exactly as given (a signed query must reach the server byte for byte).
        Timeouts and dropped connections are :class:`TransientExchangeError` naming ``where``
        (which must not hold secrets); the answer is returned unchecked (see
        :meth:`check_status`)."""
        http = self._http
        if http is None:
            raise ExchangeError("BinanceClient is not open: use `async with BinanceClient(...)`")
        url = f"{path}?{query}" if query else path
        async with self.limiter.slot(charges):
            try:
                return await http.request(
                    method,
                    url,
                    params=dict(params) if params is not None else None,
                    headers=dict(headers) if headers is not None else None,
                )
            except httpx.TimeoutException as exc:
                raise TransientExchangeError(
                    f"{where}: no answer within {self.timeout_s:g} s ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                raise TransientExchangeError(
                    f"{where}: connection failed ({type(exc).__name__}: {_one_line(str(exc))})"
                ) from exc

    def check_status(self, resp: httpx.Response, where: str) -> None:
        """Feed the used-weight header to the limiter; raise for 418 (ban), 429 (every request
        paused) and 5xx (transient). Any other status is left to the caller."""
        used = resp.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.strip().isdigit():
            self.limiter.observe_used_weight(int(used))
        status = resp.status_code
        if status == 418:
            raise self.limiter.on_banned(self._ban_seconds(resp))
        if status == 429:
            retry_after = _retry_after(resp)
            pause = self.limiter.on_rate_limited(retry_after)
            raise RateLimited(f"{where}: HTTP 429, every request paused {pause:g} s", pause)
        if status >= 500:
            raise TransientExchangeError(f"{where}: HTTP {status} {_one_line(resp.text, 60)}")

    def _handle(self, resp: httpx.Response, where: str) -> object:
        self.check_status(resp, where)
        status = resp.status_code
        payload = self.json_body(resp, where)
        if isinstance(payload, dict) and "code" in payload and "msg" in payload:
            code = payload["code"]
            if status != 200 or (isinstance(code, int) and code < 0):
                raise ExchangeError(
                    f"{where}: Binance error {code}: {_one_line(str(payload['msg']))}"
                )
        if status != 200:
            raise ExchangeError(f"{where}: HTTP {status} {_one_line(resp.text, 60)}")
        return payload

    def json_body(self, resp: httpx.Response, where: str) -> object:
        """The JSON body; not JSON is transient on HTTP 200 (a proxy page, a cut transfer),
        an :class:`ExchangeError` otherwise."""
        try:
            return json.loads(resp.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = "an HTML page" if b"<html" in resp.content[:200].lower() else "not valid JSON"
            msg = f"{where}: HTTP {resp.status_code} body is {kind}: {_one_line(resp.text, 40)!r}"
            if resp.status_code == 200:  # a proxy page or a cut transfer: worth another try
                raise TransientExchangeError(msg) from exc
            raise ExchangeError(msg) from exc

    def _ban_seconds(self, resp: httpx.Response) -> float:
        retry_after = _retry_after(resp)
        if retry_after is not None:
            return retry_after
        match = _BANNED_UNTIL_RE.search(resp.text)
        if match:
            return max(0.0, int(match.group(1)) / 1000 - self.clock.time())
        return DEFAULT_BAN_S


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


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
