"""A fake Binance: a real aiohttp server on 127.0.0.1 with fault injection (:class:`FakeExchange`).

Spot ``/api/v3/klines`` and ``/api/v3/exchangeInfo`` and USDT-M ``/fapi/v1/klines``,
``/fapi/v1/fundingRate``, ``/fapi/v1/fundingInfo``, ``/fapi/v1/premiumIndex`` and
``/fapi/v1/exchangeInfo`` are answered from candle and funding frames (in memory, or Parquet
files named like ``../shared/data``) by :class:`~atra.sim.market_desk.FakeMarketDesk`
(:attr:`FakeExchange.market_data`); the SIGNED USDT-M order endpoints (``POST/GET/DELETE
/fapi/v1/order``, ``GET /fapi/v1/openOrders``, ``GET /fapi/v2/positionRisk``, and the Algo Order
API ``POST/GET/DELETE /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``) by
:class:`~atra.sim.order_desk.FakeOrderDesk` (:attr:`FakeExchange.orders`) on a
:class:`~atra.sim.venue.MatchingEngine`, whose market time comes from ``market_clock`` (seconds;
a replay passes its simulated clock). The kline WebSocket streams (``/stream`` and
``/ws/{name}`` for USDT-M, ``/spot/stream`` and ``/spot/ws/{name}`` for spot;
:meth:`FakeExchange.stream_url`) send the same candles, each bar once the market clock passes
its close, with their own faults (:class:`~atra.sim.stream.StreamFaults`,
:attr:`FakeExchange.streams`).

Every request is weighed and admitted by :class:`~atra.sim.limits.WeightLimits`
(:attr:`FakeExchange.limits`): the ``X-MBX-USED-WEIGHT-1m`` header, 429 + ``Retry-After`` past
the limit, 418 + ban when the client keeps sending during the back-off, 429 ``-1015`` past the
account's new-order limits (``order_limits``, per window; ``()``: none). Time runs
``time_scale`` times faster than real time (``time_scale=60``: a one-minute window lasts one
second; ``Retry-After`` and ban durations are in these scaled seconds). Faults are drawn from a
seeded RNG (:class:`Faults`); a ``lost`` fault processes the request and then drops the
connection without an answer (an order exists; the client never hears of it). Every request is
recorded (:attr:`FakeExchange.requests`).

Standalone: ``python -m atra.sim.exchange --data DIR --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
from aiohttp import web

from atra.adapters.orders import SymbolRules
from atra.core.types import Market
from atra.sim.limits import DEFAULT_ORDER_LIMITS, WeightLimits, request_weight
from atra.sim.market_desk import FakeMarketDesk, read_data_dir
from atra.sim.order_desk import SIGNED_ENDPOINTS, FakeOrderDesk, signed_weight
from atra.sim.server import LocalServer
from atra.sim.spot_desk import SPOT_ENDPOINTS, FakeSpotDesk, spot_weight
from atra.sim.stream import FakeStreamDesk, SettableClock, StreamFaults
from atra.sim.venue import MatchingEngine
from atra.sim.wire import CandleKey, Reject, int_param

__all__ = [
    "STATUS_DROPPED",
    "STATUS_HUNG",
    "CandleKey",
    "FakeExchange",
    "Faults",
    "RequestRecord",
    "main",
]

_PREFIX: Final[dict[Market, str]] = {Market.SPOT: "/api/v3", Market.PERP: "/fapi/v1"}
_STREAM_ROOT: Final[dict[Market, str]] = {Market.SPOT: "/spot", Market.PERP: ""}
_HTML: Final[str] = (
    "<html><head><title>504 Gateway Time-out</title></head>"
    "<body><center><h1>504 Gateway Time-out</h1></center></body></html>"
)
STATUS_DROPPED: Final[int] = 0
STATUS_HUNG: Final[int] = -1


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


_SPOT_NAMES: Final[frozenset[str]] = frozenset(SPOT_ENDPOINTS.values())


class FakeExchange(LocalServer):
    """The fake server. ``async with FakeExchange(...) as fx:`` then point a client at ``fx.url``.

    ``weight_limit=None`` turns weight enforcement off (the header is still sent);
    ``order_limits`` are the new-order limits, ``(count, per_seconds)`` each.
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
        order_limits: Sequence[tuple[int, float]] = DEFAULT_ORDER_LIMITS,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        api_secret: str | None = None,
        market_clock: Callable[[], float] | None = None,
        slippage_bps: float = 0.0,
        symbol_rules: Mapping[str, SymbolRules] | None = None,
        stream_faults: StreamFaults | None = None,
        settable_clock: SettableClock | None = None,
    ) -> None:
        candle_frames = dict(candles or {})
        self.settable_clock = settable_clock
        """Set: the market clock, moved by ``POST /sim/clock?ms=`` (benchmarks)."""
        if settable_clock is not None:
            market_clock = market_clock or settable_clock.time
        self.limits = WeightLimits(
            weight_limit=weight_limit,
            window_s=window_s,
            ban_s=ban_s,
            ban_after=ban_after,
            funding_limit=funding_limit,
            funding_window_s=funding_window_s,
            order_limits=order_limits,
        )
        """Request weight per window, back-off and bans of the client IP."""
        self.time_scale = time_scale
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        self.requests: list[RequestRecord] = []
        self._rng = random.Random(self.faults.seed)
        self._t0 = time.monotonic()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.orders = FakeOrderDesk(
            candle_frames,
            api_key=api_key,
            api_secret=api_secret,
            market_clock=market_clock,
            slippage_bps=slippage_bps,
            symbol_rules=symbol_rules,
        )
        """The signed order endpoints (API key, signature check, matching engine)."""
        self.spot_orders = FakeSpotDesk(
            candle_frames,
            self.orders._authenticate,
            market_clock=market_clock,
            slippage_bps=slippage_bps,
            symbol_rules=symbol_rules,
        )
        """The signed spot order endpoints (:mod:`atra.sim.spot_desk`): orders, OCO lists,
        account balances, on the spot matching engine."""
        self.market_data = FakeMarketDesk(
            candle_frames, dict(funding or {}), limits=self.limits, rules=self.orders.symbol_rules
        )
        """The unsigned market-data endpoints (candles, funding, exchange info)."""
        self.streams = FakeStreamDesk(candle_frames, self.orders.market_clock, stream_faults)
        """The kline WebSocket streams (USDT-M at ``/stream``, spot at ``/spot/stream``)."""

    @classmethod
    def from_dir(
        cls, data_dir: Path | str, *, symbols: Sequence[str] | None = None, **kwargs: object
    ) -> FakeExchange:
        """Serve every ``{SYMBOL}_{spot|perp}_{tf|funding}.parquet`` in ``data_dir``
        (:func:`~atra.sim.market_desk.read_data_dir`)."""
        candles, funding = read_data_dir(data_dir, symbols)
        return cls(candles, funding, **kwargs)  # type: ignore[arg-type]

    # ---- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        for market, prefix in _PREFIX.items():
            app.router.add_get(f"{prefix}/klines", self._handler(market, "klines"))
            app.router.add_get(f"{prefix}/exchangeInfo", self._handler(market, "exchangeInfo"))
        app.router.add_get("/fapi/v1/fundingRate", self._handler(Market.PERP, "fundingRate"))
        app.router.add_get("/fapi/v1/premiumIndex", self._handler(Market.PERP, "premiumIndex"))
        app.router.add_get("/fapi/v1/fundingInfo", self._handler(Market.PERP, "fundingInfo"))
        order = self._handler(Market.PERP, "order")
        app.router.add_post("/fapi/v1/order", order)
        app.router.add_get("/fapi/v1/order", order)
        app.router.add_delete("/fapi/v1/order", order)
        app.router.add_get("/fapi/v1/openOrders", self._handler(Market.PERP, "openOrders"))
        algo = self._handler(Market.PERP, "algoOrder")  # the Algo Order API (conditional)
        app.router.add_post("/fapi/v1/algoOrder", algo)
        app.router.add_get("/fapi/v1/algoOrder", algo)
        app.router.add_delete("/fapi/v1/algoOrder", algo)
        app.router.add_get("/fapi/v1/openAlgoOrders", self._handler(Market.PERP, "openAlgoOrders"))
        app.router.add_get("/fapi/v2/positionRisk", self._handler(Market.PERP, "positionRisk"))
        for path, name in SPOT_ENDPOINTS.items():  # spot orders: GET, POST, DELETE alike
            for add in (app.router.add_get, app.router.add_post, app.router.add_delete):
                add(path, self._handler(Market.SPOT, name))
        for market, root in _STREAM_ROOT.items():
            streams = self._stream_handler(market)
            app.router.add_get(f"{root}/stream", streams)
            app.router.add_get(f"{root}/ws/{{name}}", streams)
        if self.settable_clock is not None:
            app.router.add_post("/sim/clock", self.settable_clock.handle)
        await self._serve(app)
        self._t0 = time.monotonic()

    async def stop(self) -> None:
        self._closing.set()
        await self.streams.disconnect()
        await self._close()

    def stream_url(self, market: Market) -> str:
        """Base URL of ``market``'s kline streams (Binance: ``wss://fstream.binance.com``)."""
        return f"ws://{self.host}:{self.port}{_STREAM_ROOT[market]}"

    # ---- clock and weight --------------------------------------------------------------

    def now_s(self) -> float:
        """Scaled seconds since the server started."""
        return (time.monotonic() - self._t0) * self.time_scale

    def ban(self, seconds: float) -> None:
        """Ban the client IP now for ``seconds`` (scaled): every request gets 418."""
        self.limits.ban(self.now_s(), seconds)

    def charge_external(self, weight: int) -> None:
        """Count ``weight`` used by another client on the same IP (not logged as a request)."""
        self.limits.charge(self.now_s(), weight)

    def used_weight(self) -> int:
        """Weight counted in the current window."""
        return self.limits.used_at(self.now_s())

    # ---- handlers ----------------------------------------------------------------------

    def _stream_handler(
        self, market: Market
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.streams.handle(request, market)

        return handle

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
        weight = signed_weight(endpoint, params, request.method)
        if weight is None:
            weight = spot_weight(endpoint, params, request.method)
        if weight is None:
            weight = request_weight(market, endpoint, limit or default)
        conn = request.transport.get_extra_info("peername") if request.transport else None
        posts = {"order": 1, "algoOrder": 1, "spotOrder": 1, "spotOco": 2}  # an OCO: 2 orders
        orders = posts.get(endpoint, 0) if request.method == "POST" else 0
        funding = endpoint in ("fundingRate", "fundingInfo")  # one shared bucket
        verdict = self.limits.admit(now, weight, funding, conn, orders=orders)
        record = {"t_s": now, "path": request.path, "params": params, "weight": weight}
        headers = {"X-MBX-USED-WEIGHT-1m": str(self.limits.used)}
        if verdict.status != 200:
            if verdict.retry_after_s is not None:
                headers["Retry-After"] = str(math.ceil(verdict.retry_after_s))
            self._log(record, verdict.status)
            body = verdict.body(self.time_scale)
            return web.json_response(body, status=verdict.status, headers=headers)
        if orders:
            headers.update(self.limits.order_headers())
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
            elif endpoint in _SPOT_NAMES:
                text = self.spot_orders.answer(request, endpoint, params)
            else:
                now_ms = int(self.market_clock() * 1000)
                text = self.market_data.answer(market, endpoint, params, now_ms=now_ms)
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
                used_weight=self.limits.used,
                fault=fault,
            )
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


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeExchange.from_dir(
        args.data,
        weight_limit=args.weight_limit or None,
        time_scale=args.time_scale,
        faults=Faults(latency_s=(args.latency_ms / 1000, args.latency_ms / 1000)),
        host=args.host,
        port=args.port,
        settable_clock=None
        if args.sim_clock_ms is None
        else SettableClock(args.sim_clock_ms / 1e3),
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
    parser.add_argument(
        "--sim-clock-ms",
        type=int,
        default=None,
        help="market clock start (POST /sim/clock moves it)",
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":  # pragma: no cover
    main()
