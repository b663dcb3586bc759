"""A fake Binance: a real aiohttp server on 127.0.0.1 serving candles and funding from frames.

Serves spot ``/api/v3/klines`` and ``/api/v3/exchangeInfo`` and USDT-M ``/fapi/v1/klines``,
``/fapi/v1/fundingRate``, ``/fapi/v1/premiumIndex`` and ``/fapi/v1/exchangeInfo`` from
candle and funding frames (in memory, or Parquet files named like ``../shared/data``:
``BTCUSDT_spot_1h.parquet``, ``BTCUSDT_perp_1h.parquet``, ``BTCUSDT_perp_funding.parquet``).

It behaves like Binance where a client can get it wrong: ``startTime`` / ``endTime`` /
``limit`` (default 500, capped at 1000 spot / 1500 futures; fundingRate 100 / 1000), the
``X-MBX-USED-WEIGHT-1m`` header, weight counted in fixed windows (429 + ``Retry-After`` past
the limit, 418 + ban when the client keeps sending during the back-off), ``-1121 Invalid
symbol.`` and ``-1120 Invalid interval.``. Time runs ``time_scale`` times faster than real
time (``time_scale=60``: a one-minute window lasts one second; ``Retry-After`` and ban
durations are in these scaled seconds). Faults are drawn from a seeded RNG (:class:`Faults`).
Every request is recorded (:attr:`FakeExchange.requests`).

Orders (USDT-M only): ``POST/GET/DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``,
``GET /fapi/v2/positionRisk``, all SIGNED, answered by
:class:`~atra.sim.order_desk.FakeOrderDesk` (:attr:`FakeExchange.orders`) on a
:class:`~atra.sim.venue.MatchingEngine`; market time comes from ``market_clock``
(seconds; a replay passes its simulated clock). A ``lost`` fault processes the request and
then drops the connection without an answer (the order exists; the client never hears of it).

The weight table below is kept apart from the client's on purpose: the fake is the oracle.

Standalone: ``python -m atra.sim.exchange --data DIR --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import numpy as np
import pandas as pd
from aiohttp import web

from atra.adapters.orders import SymbolRules
from atra.core.types import Market, Timeframe
from atra.errors import DataError
from atra.sim.order_desk import SIGNED_ENDPOINTS, FakeOrderDesk, signed_weight
from atra.sim.venue import MatchingEngine
from atra.sim.wire import (
    CandleKey,
    Reject,
    Series,
    candle_series,
    fixed,
    fmt,
    funding_series,
    int_param,
    page,
)

__all__ = [
    "STATUS_DROPPED",
    "STATUS_HUNG",
    "CandleKey",
    "FakeExchange",
    "Faults",
    "RequestRecord",
    "main",
]

_MAX_KLINES: Final[dict[Market, int]] = {Market.SPOT: 1000, Market.PERP: 1500}
_PREFIX: Final[dict[Market, str]] = {Market.SPOT: "/api/v3", Market.PERP: "/fapi/v1"}
_FILE_RE: Final = re.compile(r"^([A-Z0-9]+)_(spot|perp)_([0-9a-zA-Z]+)\.parquet$")
_HTML: Final[str] = (
    "<html><head><title>504 Gateway Time-out</title></head>"
    "<body><center><h1>504 Gateway Time-out</h1></center></body></html>"
)
STATUS_DROPPED: Final[int] = 0
STATUS_HUNG: Final[int] = -1
_NO_TIMES: Final = np.zeros(0, dtype=np.int64)
"""Times of a series the exchange does not have (no rows)."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected faults, each a probability per request, drawn from ``Random(seed)``."""

    p_5xx: float = 0.0
    p_timeout: float = 0.0
    p_truncated: float = 0.0
    p_garbage: float = 0.0
    p_drop: float = 0.0
    latency_s: tuple[float, float] = (0.0, 0.0)
    """Extra real-time delay before every answer, uniform in ``[lo, hi]``."""
    hang_s: float = 30.0
    """How long a 'timeout' fault holds the request (real seconds) before answering."""
    seed: int = 0
    lost: float = 0.0
    """Process the request, then drop the connection without an answer."""

    def draw(self, rng: random.Random) -> str | None:
        """Which fault (if any) hits the next request."""
        u = rng.random()
        for name, p in (
            ("5xx", self.p_5xx),
            ("timeout", self.p_timeout),
            ("truncated", self.p_truncated),
            ("garbage", self.p_garbage),
            ("drop", self.p_drop),
            ("lost", self.lost),
        ):
            if u < p:
                return name
            u -= p
        return None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the fake saw it. ``t_s``: arrival in scaled seconds since start."""

    t_s: float
    path: str
    params: Mapping[str, str]
    status: int
    """HTTP status sent; 0 when the connection was dropped, -1 when it was left hanging."""
    weight: int
    used_weight: int
    fault: str | None = None


def _weight(market: Market, endpoint: str, limit: int) -> int:
    if endpoint == "klines":
        if market is Market.SPOT:
            return 2
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if endpoint == "exchangeInfo":
        return 20 if market is Market.SPOT else 1
    return 1


class FakeExchange:
    """The fake server. ``async with FakeExchange(...) as fx:`` then point a client at ``fx.url``.

    ``weight_limit=None`` turns weight enforcement off (the header is still sent).
    """

    def __init__(
        self,
        candles: Mapping[CandleKey, pd.DataFrame] | None = None,
        funding: Mapping[str, pd.DataFrame] | None = None,
        *,
        weight_limit: int | None = 2400,
        window_s: float = 60.0,
        time_scale: float = 1.0,
        ban_s: float = 120.0,
        ban_after: int = 20,
        funding_limit: int = 500,
        funding_window_s: float = 300.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        api_secret: str | None = None,
        market_clock: Callable[[], float] | None = None,
        slippage_bps: float = 0.0,
        symbol_rules: Mapping[str, SymbolRules] | None = None,
    ) -> None:
        self._candle_frames = dict(candles or {})
        self._funding_frames = dict(funding or {})
        self._candles: dict[CandleKey, Series] = {}
        self._funding: dict[str, Series] = {}
        self.weight_limit = weight_limit
        self.window_s = window_s
        self.time_scale = time_scale
        self.ban_s = ban_s
        self.ban_after = ban_after
        self.funding_limit = funding_limit
        self.funding_window_s = funding_window_s
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        self.requests: list[RequestRecord] = []
        self._rng = random.Random(self.faults.seed)
        self._t0 = time.monotonic()
        self._window = -1
        self._used = 0
        self._funding_window = -1
        self._funding_used = 0
        self.backoff_until = -math.inf
        self.banned_until = -math.inf
        self._violations = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.orders = FakeOrderDesk(
            self._candle_frames,
            api_key=api_key,
            api_secret=api_secret,
            market_clock=market_clock,
            slippage_bps=slippage_bps,
            symbol_rules=symbol_rules,
        )
        """The signed order endpoints (API key, signature check, matching engine)."""

    @classmethod
    def from_dir(
        cls, data_dir: Path | str, *, symbols: Sequence[str] | None = None, **kwargs: object
    ) -> FakeExchange:
        """Serve every ``{SYMBOL}_{spot|perp}_{tf|funding}.parquet`` in ``data_dir``."""
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"fake exchange data folder {root} does not exist")
        candles: dict[CandleKey, pd.DataFrame] = {}
        funding: dict[str, pd.DataFrame] = {}
        for path in sorted(root.glob("*.parquet")):
            m = _FILE_RE.match(path.name)
            if m is None or (symbols is not None and m.group(1) not in symbols):
                continue
            sym, market, tf = m.group(1), Market(m.group(2)), m.group(3)
            if tf == "funding":
                funding[sym] = pd.read_parquet(path)
            elif tf in {t.value for t in Timeframe}:
                candles[(market, sym, Timeframe(tf))] = pd.read_parquet(path)
        return cls(candles, funding, **kwargs)  # type: ignore[arg-type]

    # ---- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        for market, prefix in _PREFIX.items():
            app.router.add_get(f"{prefix}/klines", self._handler(market, "klines"))
            app.router.add_get(f"{prefix}/exchangeInfo", self._handler(market, "exchangeInfo"))
        app.router.add_get("/fapi/v1/fundingRate", self._handler(Market.PERP, "fundingRate"))
        app.router.add_get("/fapi/v1/premiumIndex", self._handler(Market.PERP, "premiumIndex"))
        order = self._handler(Market.PERP, "order")
        app.router.add_post("/fapi/v1/order", order)
        app.router.add_get("/fapi/v1/order", order)
        app.router.add_delete("/fapi/v1/order", order)
        app.router.add_get("/fapi/v1/openOrders", self._handler(Market.PERP, "openOrders"))
        app.router.add_get("/fapi/v2/positionRisk", self._handler(Market.PERP, "positionRisk"))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._t0 = time.monotonic()

    async def stop(self) -> None:
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- clock and weight --------------------------------------------------------------

    def now_s(self) -> float:
        """Scaled seconds since the server started."""
        return (time.monotonic() - self._t0) * self.time_scale

    def ban(self, seconds: float) -> None:
        """Ban the client IP now for ``seconds`` (scaled): every request gets 418."""
        self.banned_until = self.now_s() + seconds

    def charge_external(self, weight: int) -> None:
        """Count ``weight`` used by another client on the same IP (not logged as a request)."""
        self._roll(self.now_s())
        self._used += weight

    def used_weight(self) -> int:
        """Weight counted in the current window."""
        self._roll(self.now_s())
        return self._used

    def _roll(self, now: float) -> None:
        window = math.floor(now / self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        fwindow = math.floor(now / self.funding_window_s)
        if fwindow != self._funding_window:
            self._funding_window, self._funding_used = fwindow, 0

    def _admit(self, now: float, weight: int, funding: bool) -> tuple[int, float | None]:
        """(status, retry_after_s): 200 to serve, else 429 or 418 and how long to wait."""
        self._roll(now)
        if now < self.banned_until:
            return 418, self.banned_until - now
        if now < self.backoff_until:
            self._violations += 1
            if self._violations > self.ban_after:
                self.banned_until = now + self.ban_s
                return 418, self.ban_s
            return 429, self.backoff_until - now
        over = self.weight_limit is not None and self._used + weight > self.weight_limit
        fover = funding and self._funding_used + 1 > self.funding_limit
        if over or fover:
            size = self.funding_window_s if fover and not over else self.window_s
            self.backoff_until = (math.floor(now / size) + 1) * size
            self._violations = 0
            return 429, self.backoff_until - now
        self._used += weight
        self._funding_used += int(funding)
        return 200, None

    # ---- handlers ----------------------------------------------------------------------

    def _handler(
        self, market: Market, endpoint: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, market, endpoint)

        return handle

    async def _handle(
        self, request: web.Request, market: Market, endpoint: str
    ) -> web.StreamResponse:
        now = self.now_s()
        params = dict(request.query)
        params.pop("signature", None)
        try:
            limit = int_param(params, "limit")
        except Reject:
            limit = None
        default = 500 if endpoint == "klines" else 100
        weight = signed_weight(endpoint, params)
        if weight is None:
            weight = _weight(market, endpoint, limit or default)
        status, wait_s = self._admit(now, weight, endpoint == "fundingRate")
        record = {"t_s": now, "path": request.path, "params": params, "weight": weight}
        headers = {"X-MBX-USED-WEIGHT-1m": str(self._used)}
        if status != 200:
            retry = str(math.ceil(wait_s or 0.0))
            headers["Retry-After"] = retry
            if status == 418:
                until_ms = int((time.time() + (wait_s or 0.0) / self.time_scale) * 1000)
                msg = f"Way too much request weight used; IP banned until {until_ms}."
                body = {"code": -1003, "msg": msg}
            else:
                body = {"code": -1003, "msg": "Too much request weight used; please back off."}
            self._log(record, status)
            return web.json_response(body, status=status, headers=headers)
        fault = self.faults.draw(self._rng)
        lo, hi = self.faults.latency_s
        if hi > 0:
            await asyncio.sleep(self._rng.uniform(lo, hi))
        if fault == "timeout":
            self._log(record, STATUS_HUNG, fault)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.faults.hang_s)
            return web.Response(status=504, text="late")
        if fault == "drop":
            self._log(record, STATUS_DROPPED, fault)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "5xx":
            self._log(record, 503, fault)
            body = {"code": -1001, "msg": "Internal error; unable to process your request."}
            return web.json_response(body, status=503)
        if fault == "garbage":
            self._log(record, 200, fault)
            return web.Response(text=_HTML, content_type="text/html", headers=headers)
        try:
            if endpoint in SIGNED_ENDPOINTS:
                text = self.orders.answer(request, endpoint, params)
            else:
                text = self._answer(market, endpoint, params)
            status = 200
        except Reject as rej:
            text = json.dumps({"code": rej.code, "msg": rej.msg})
            status = rej.status
        if fault == "lost":
            self._log(record, STATUS_DROPPED, fault)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "truncated" and status == 200:
            text = text[: max(1, len(text) // 2)]
        self._log(record, status, fault)
        return web.Response(
            text=text, status=status, content_type="application/json", headers=headers
        )

    def _log(self, record: Mapping[str, object], status: int, fault: str | None = None) -> None:
        self.requests.append(
            RequestRecord(
                t_s=float(record["t_s"]),  # type: ignore[arg-type]
                path=str(record["path"]),
                params=dict(record["params"]),  # type: ignore[call-overload]
                status=status,
                weight=int(record["weight"]),  # type: ignore[call-overload]
                used_weight=self._used,
                fault=fault,
            )
        )

    # ---- endpoints ---------------------------------------------------------------------

    def _answer(self, market: Market, endpoint: str, params: Mapping[str, str]) -> str:
        if endpoint == "exchangeInfo":
            return self._exchange_info(market)
        symbol = params.get("symbol", "")
        if not symbol:
            raise Reject(400, -1102, "Mandatory parameter 'symbol' was not sent.")
        if symbol not in self._symbols(market):
            raise Reject(400, -1121, "Invalid symbol.")
        if endpoint == "klines":
            interval = params.get("interval", "")
            try:
                tf = Timeframe(interval)
            except ValueError:
                raise Reject(400, -1120, "Invalid interval.") from None
            series = self._candle_series((market, symbol, tf))
            cap = _MAX_KLINES[market]
            return page(series, params, default=500, cap=cap)
        fseries = self._funding_series(symbol)
        if endpoint == "fundingRate":
            return page(fseries, params, default=100, cap=1000)
        close = next(
            (
                self._candle_series(k).last_close
                for k in sorted(self._candle_frames, key=str)
                if k[0] is market and k[1] == symbol
            ),
            0.0,
        )
        last_ft = int(fseries.times[-1]) if fseries.times.size else 0
        return json.dumps(
            {
                "symbol": symbol,
                "markPrice": fmt(close),
                "indexPrice": fmt(close),
                "estimatedSettlePrice": fmt(close),
                "lastFundingRate": fmt(fseries.last_rate),
                "interestRate": "0.0001",
                "nextFundingTime": last_ft + 8 * 3_600_000,
                "time": int(time.time() * 1000),
            }
        )

    # ---- orders ------------------------------------------------------------------------

    @property
    def engine(self) -> MatchingEngine:
        """The matching engine behind the order endpoints (:attr:`FakeOrderDesk.engine`)."""
        return self.orders.engine

    def symbol_rules(self, symbol: str) -> SymbolRules:
        """The order filters served for ``symbol`` (defaults: step and tick 1e-9, no minimum)."""
        return self.orders.symbol_rules(symbol)

    @property
    def api_key(self) -> str | None:
        """``X-MBX-APIKEY`` the signed endpoints require (None: any key)."""
        return self.orders.api_key

    @property
    def api_secret(self) -> str | None:
        """Secret the signatures are checked with (None: signatures are not checked)."""
        return self.orders.api_secret

    @property
    def market_clock(self) -> Callable[[], float]:
        """Market time of the order endpoints, in seconds."""
        return self.orders.market_clock

    @property
    def slippage_bps(self) -> float:
        """Slippage of the matching engine's market fills, in basis points."""
        return self.orders.slippage_bps

    def _symbols(self, market: Market) -> set[str]:
        syms = {s for m, s, _ in self._candle_frames if m is market}
        if market is Market.PERP:
            syms |= set(self._funding_frames)
        return syms

    def _candle_series(self, key: CandleKey) -> Series:
        series = self._candles.get(key)
        if series is None:
            frame = self._candle_frames.get(key)
            series = Series(_NO_TIMES) if frame is None else candle_series(frame, key[2].ms)
            self._candles[key] = series
        return series

    def _funding_series(self, symbol: str) -> Series:
        series = self._funding.get(symbol)
        if series is None:
            frame = self._funding_frames.get(symbol)
            series = Series(_NO_TIMES) if frame is None else funding_series(symbol, frame)
            self._funding[symbol] = series
        return series

    def _exchange_info(self, market: Market) -> str:
        limit = self.weight_limit if self.weight_limit is not None else 1_000_000
        if self.window_s % 60 == 0:
            interval, num = "MINUTE", int(self.window_s // 60)
        else:
            interval, num = "SECOND", max(1, round(self.window_s))
        return json.dumps(
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": interval,
                        "intervalNum": num,
                        "limit": limit,
                    }
                ],
                "symbols": [
                    {"symbol": s, "status": "TRADING", "quoteAsset": "USDT"}
                    | (self._filters(s) if market is Market.PERP else {})
                    for s in sorted(self._symbols(market))
                ],
            }
        )

    def _filters(self, symbol: str) -> dict[str, object]:
        r = self.symbol_rules(symbol)
        lot = {"stepSize": fixed(r.step_size), "minQty": fixed(r.min_qty), "maxQty": "1000000"}
        return {
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": fixed(r.tick_size)},
                {"filterType": "LOT_SIZE"} | lot,
                {"filterType": "MARKET_LOT_SIZE"} | lot,
            ]
        }


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeExchange.from_dir(
        args.data,
        weight_limit=args.weight_limit or None,
        time_scale=args.time_scale,
        faults=Faults(latency_s=(args.latency_ms / 1000, args.latency_ms / 1000)),
        host=args.host,
        port=args.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake exchange listening on {fake.url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve Parquet candles as a fake Binance.")
    parser.add_argument("--data", required=True, help="folder of {SYMBOL}_{market}_{tf}.parquet")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--weight-limit", type=int, default=2400, help="0 turns limits off")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":  # pragma: no cover
    main()
